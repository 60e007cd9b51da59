"""Where the data lives in a data directory and what its columns are called."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataConfig:
    """Names of files and columns; vocabulary sizes (0 or empty = inferred from the data as
    max + 1, and refused when that id space is implausibly sparse: mmctr/data/vocab.py)."""

    train_file: str = "train.parquet"
    valid_file: str = "valid.parquet"
    test_file: str = "test.parquet"
    item_file: str = "item_info.parquet"
    user_col: str = "user_id"  # used only to group rows for gAUC
    item_col: str = "item_id"  # the target item (and item_info's key)
    seq_col: str = "item_seq"  # fixed-length, left-padded history of item ids
    label_col: str = "label"
    context_cols: tuple[str, ...] = ("likes_level", "views_level")
    context_vocab_sizes: tuple[int, ...] = ()  # one per context column; empty = infer max + 1
    tags_col: str = "item_tags"  # in item_info: fixed-length, left-padded tag ids
    emb_col: str = "item_emb_d128"  # in item_info: frozen multimodal embedding
    num_tags: int = 0  # tag vocabulary including padding 0; 0 = infer max + 1
    # in item_info: integer attributes of each item (e.g. its likes / views levels), embedded
    # into the item vector of the target and of every history item; empty = none (the default)
    item_feature_cols: tuple[str, ...] = ()
    item_feature_vocab_sizes: tuple[int, ...] = ()  # one per item feature; empty = infer max + 1
    # train: read parquet row groups on the fly instead of the whole split (data/stream.py)
    streaming: bool = False
    shuffle_buffer: int = 200_000  # rows a streaming shuffle holds (about 90 MB at 100 items)

    def __post_init__(self) -> None:
        if self.context_vocab_sizes and len(self.context_vocab_sizes) != len(self.context_cols):
            raise ValueError(
                f"data.context_vocab_sizes has {len(self.context_vocab_sizes)} entries but "
                f"data.context_cols has {len(self.context_cols)}; give one size per column or none"
            )
        if any(v < 1 for v in self.context_vocab_sizes):
            raise ValueError("data.context_vocab_sizes must all be >= 1")
        if self.shuffle_buffer < 2:
            raise ValueError(f"data.shuffle_buffer must be >= 2 rows, got {self.shuffle_buffer}")
        if self.num_tags < 0:
            raise ValueError("data.num_tags must be >= 0 (0 = infer from item_info)")
        if len(set(self.context_cols)) != len(self.context_cols):
            raise ValueError(f"data.context_cols lists a column twice: {self.context_cols}")
        self._check_item_features()

    def _check_item_features(self) -> None:
        cols, sizes = self.item_feature_cols, self.item_feature_vocab_sizes
        if sizes and len(sizes) != len(cols):
            raise ValueError(
                f"data.item_feature_vocab_sizes has {len(sizes)} entries but "
                f"data.item_feature_cols has {len(cols)}; give one size per column or none"
            )
        if any(v < 1 for v in sizes):
            raise ValueError("data.item_feature_vocab_sizes must all be >= 1")
        if len(set(cols)) != len(cols):
            raise ValueError(f"data.item_feature_cols lists a column twice: {cols}")
        taken = {self.item_col, self.tags_col, self.emb_col}
        clash = next((c for c in cols if c in taken or not c), None)
        if clash is not None:
            raise ValueError(
                f"data.item_feature_cols: {clash!r} is not an item feature column (item_info's "
                "id, tags and embedding columns are read already)"
            )

    def split_file(self, split: str) -> str:
        files = {"train": self.train_file, "valid": self.valid_file, "test": self.test_file}
        if split not in files:
            raise ValueError(f"unknown split {split!r}; expected one of {sorted(files)}")
        return files[split]
