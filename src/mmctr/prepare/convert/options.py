"""The converter's options, one per ``mmctr convert`` flag; all are recorded in dataset.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mmctr.errors import ConfigError

SAMPLINGS = ("uniform", "popularity")


@dataclass(frozen=True)
class ConvertOptions:
    """Every choice of the conversion; all of it is recorded in dataset.json."""

    negatives: int = 3  # sampled negatives per positive; 3 gives 25% positives (SPEC section 8)
    sampling: str = "uniform"  # "uniform" over items, or "popularity" (train-period counts)
    max_len: int = 100  # stored history length: up to this many previous items
    seed: int = 0  # negatives and the slot of the positive among its negatives
    min_tag_count: int = 2  # a tag enters the vocabulary when at least this many items carry it
    tags_per_item: int = 5
    max_users: int = 0  # convert only the first N users in original-id order; 0 = all
    cold_items: float = 0.0  # share of items held out of the train period (cold start); 0 = none
    item_emb: Path | None = None  # parquet of precomputed embeddings; None = compute them
    item_emb_id_col: str = "item_id"  # its column of original item ids
    text_encoder: str = "all-MiniLM-L6-v2"
    image_encoder: str = "efficientnet-lite0"
    whiten: bool = False  # whiten the PCA output (computed embeddings only)
    embed_cache: Path | None = None
    embed_batch_size: int = 64

    def __post_init__(self) -> None:
        checks = {
            "--negatives": self.negatives >= 1,
            "--max-len": self.max_len >= 1,
            "--min-tag-count": self.min_tag_count >= 1,
            "--tags-per-item": self.tags_per_item >= 1,
            "--max-users": self.max_users >= 0,
            "--embed-batch-size": self.embed_batch_size >= 1,
        }
        for option, ok in checks.items():
            if not ok:
                raise ConfigError(f"{option} must be >= {0 if option == '--max-users' else 1}")
        if not 0.0 <= self.cold_items < 1.0:
            raise ConfigError(f"--cold-items {self.cold_items}: expected a share in [0, 1)")
        if self.sampling not in SAMPLINGS:
            raise ConfigError(
                f"--negatives-sampling {self.sampling!r}: expected one of {', '.join(SAMPLINGS)}"
            )
