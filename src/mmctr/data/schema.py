"""What a trained model assumes about its data: sizes, vocabularies and column names."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from mmctr.config.dims import DataDims
from mmctr.errors import CheckpointError


@dataclass(frozen=True)
class DataSchema:
    num_items: int  # rows of item_info, padding row 0 included
    num_tags: int  # tag vocabulary, padding 0 included
    tags_per_item: int
    emb_dim: int  # width of the frozen multimodal embedding
    seq_len: int  # stored history length of every row
    context_cols: tuple[str, ...]
    context_vocab_sizes: tuple[int, ...]
    seq_col: str = "item_seq"
    item_col: str = "item_id"

    @property
    def dims(self) -> DataDims:
        """The sizes a model is built from."""
        return DataDims(
            num_items=self.num_items,
            num_tags=self.num_tags,
            tags_per_item=self.tags_per_item,
            emb_dim=self.emb_dim,
            context_vocab_sizes=self.context_vocab_sizes,
        )

    @property
    def fingerprint(self) -> str:
        """A short hash that changes whenever anything the model depends on changes."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["context_cols"] = list(self.context_cols)
        out["context_vocab_sizes"] = list(self.context_vocab_sizes)
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DataSchema:
        return cls(
            **{
                **raw,
                "context_cols": tuple(raw["context_cols"]),
                "context_vocab_sizes": tuple(raw["context_vocab_sizes"]),
            }
        )

    def check_compatible(self, other: DataSchema, *, where: str) -> None:
        """Raise CheckpointError naming every field in which ``other`` (the data) differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        diffs = [
            f"{k}: model {mine[k]!r} vs data {theirs[k]!r}" for k in mine if mine[k] != theirs[k]
        ]
        if diffs:
            raise CheckpointError(
                f"{where}: the data's schema (fingerprint {other.fingerprint}) does not match the "
                f"one the model was trained on (fingerprint {self.fingerprint}): "
                + "; ".join(diffs)
            )
