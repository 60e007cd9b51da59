"""Inferred vocabularies: max id + 1, refused when the id space is implausibly sparse.

A vocabulary that is not given in ``[data]`` is inferred as the largest id + 1, so one stray id
decides the size of an embedding table: a tag id of 10^9 asks for a table of 10^9 rows, a
context level of 999 in one row for 1,000 rows where 11 are used. The rule: an inferred
vocabulary of more than ``SMALL_VOCAB`` ids must have at least ``MIN_FILL`` of its ids in use
(padding 0 counted as used). Data made by ``mmctr convert`` and ``mmctr synth`` number their
ids 1..N and use all of them; filtering or sampling a data set leaves gaps, but seldom three
quarters of the space; a table of at most 256 rows costs nothing worth refusing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmctr.config.data import DataConfig
from mmctr.data.checks import check_range, check_type, open_parquet, record_batches, scalar
from mmctr.errors import DataError

SMALL_VOCAB = 256  # an inferred vocabulary up to this many ids is accepted however sparse
MIN_FILL = 0.25  # share of a larger inferred vocabulary's ids that must occur in the data
INT32_MAX = int(np.iinfo(np.int32).max)  # ids are held as int32


@dataclass
class IdSpace:
    """What a column's ids look like across files: the largest, where it is, which occur."""

    column: str
    highest: int = 0
    where: str = ""  # file of the largest id
    row: int = 0  # its row there
    seen: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))  # padding 0

    def add(self, values: np.ndarray, where: str, row0: int) -> None:
        """Take in a batch of non-negative ids (row i of ``values`` is file row row0 + i)."""
        if values.size == 0:
            return
        self.seen = np.union1d(self.seen, np.unique(values))
        top = int(values.max())
        if top > self.highest or not self.where:
            width = 1 if values.ndim == 1 else values.shape[1]
            self.highest, self.where = top, where
            self.row = row0 + int(np.argmax(values.reshape(-1))) // width

    def inferred_size(self, what: str, fix: str) -> int:
        """max id + 1, or a DataError when that space is too sparse to be meant (module doc)."""
        size = self.highest + 1
        used = int(self.seen.size)
        if size > SMALL_VOCAB and used < MIN_FILL * size:
            raise DataError(
                f"{self.where}: column {self.column!r} row {self.row}: {what} {self.highest} "
                f"would make the inferred vocabulary (max + 1) {size:,} entries, but only "
                f"{used:,} distinct values occur (padding 0 included); an inferred vocabulary "
                f"of more than {SMALL_VOCAB} entries must have at least {MIN_FILL:.0%} of them "
                "in use. Re-index the ids (`mmctr convert` numbers them 1..N), or set the real "
                f"vocabulary size in [data] ({fix}), which makes every id at or above it an "
                "error naming its row"
            )
        return size


def infer_context_vocab(data_dir: Path, cfg: DataConfig, splits: list[str]) -> tuple[int, ...]:
    """max + 1 of each context column over the split files that exist, refused when sparse."""
    spaces = [IdSpace(col) for col in cfg.context_cols]
    for split in splits:
        path = Path(data_dir) / cfg.split_file(split)
        if not path.is_file():
            continue
        pf = open_parquet(path, list(cfg.context_cols))
        for col in cfg.context_cols:
            check_type(pf, col, "int", path.name)
        for row0, batch in record_batches(pf, list(cfg.context_cols), path.name):
            for space in spaces:
                values = scalar(batch.column(space.column), path.name, space.column, row0)
                check_range(values, INT32_MAX, path.name, space.column, row0, "value")
                space.add(values, path.name, row0)
    cols = ", ".join(cfg.context_cols)
    fix = f"data.context_vocab_sizes, one size for each of data.context_cols: {cols}"
    return tuple(space.inferred_size("value", fix) for space in spaces)


def tag_vocab(tags: np.ndarray, cfg: DataConfig, where: str, model_tags: int | None) -> int:
    """The tag vocabulary: the trained model's, else ``data.num_tags``, else inferred; every tag
    id of item_info (``tags``, (N, T)) must lie below it."""
    if model_tags:
        check_range(tags, model_tags, where, cfg.tags_col, 0, "tag id", "the trained model's tags")
        return model_tags
    if cfg.num_tags:
        check_range(tags, cfg.num_tags, where, cfg.tags_col, 0, "tag id", "data.num_tags")
        return cfg.num_tags
    space = IdSpace(cfg.tags_col)
    space.add(tags, where, 0)
    return space.inferred_size("tag id", "data.num_tags = N")
