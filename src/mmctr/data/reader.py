"""Read and validate data sets in the challenge layout into contiguous numpy arrays.

Every check (``checks``) names the file, the column and the first offending row, so that a user
can find the problem without a debugger. Large files are read in record batches straight into
preallocated arrays, so memory stays near the size of the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmctr.config.data import DataConfig
from mmctr.data.checks import (
    check_finite,
    check_range,
    check_type,
    first_index,
    list_matrix,
    open_parquet,
    record_batches,
    scalar,
)
from mmctr.data.features import read_item_features
from mmctr.data.vocab import INT32_MAX, tag_vocab
from mmctr.errors import DataError


@dataclass(frozen=True)
class ItemTable:
    """Features of every item, indexed by item id; row 0 is the zero padding item."""

    tags: np.ndarray  # (N, T) int32, left-padded with 0
    emb: np.ndarray  # (N, D) float32, frozen multimodal embedding
    num_tags: int  # tag vocabulary including padding
    # (N, C) int32: the item features of data.item_feature_cols (data/features.py); None = none
    features: np.ndarray | None = None
    feature_vocab_sizes: tuple[int, ...] = ()  # one per feature column

    @property
    def num_items(self) -> int:
        return int(self.tags.shape[0])

    @property
    def feature_matrix(self) -> np.ndarray:
        """The (N, C) int32 item features; C = 0 without any."""
        if self.features is None:
            return np.zeros((self.num_items, 0), dtype=np.int32)
        return self.features


@dataclass(frozen=True)
class Split:
    """One split held as contiguous arrays; row i of every array is sample i."""

    name: str
    users: np.ndarray  # (N,) int64
    history: np.ndarray  # (N, L) int32, left-padded, most recent last
    target: np.ndarray  # (N,) int32
    context: np.ndarray  # (N, F) int32
    labels: np.ndarray | None  # (N,) float32, None when the file has no label column

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.history.shape[1])

    def take(self, rows: np.ndarray | slice) -> Split:
        """These rows (an index array, a boolean mask or a slice) as a split of their own."""
        labels = None if self.labels is None else self.labels[rows]
        return replace(
            self,
            users=self.users[rows],
            history=self.history[rows],
            target=self.target[rows],
            context=self.context[rows],
            labels=labels,
        )


def read_item_table(
    data_dir: Path,
    cfg: DataConfig,
    *,
    num_tags: int | None = None,
    feature_vocab: tuple[int, ...] | None = None,
) -> ItemTable:
    """Read item_info: row i is item i, row 0 the all-zero padding item. The tag vocabulary is
    ``num_tags`` (a trained model's), else ``cfg.num_tags``, else inferred (``vocab``); the
    item features' vocabularies likewise, from ``feature_vocab`` (data/features.py)."""
    path = Path(data_dir) / cfg.item_file
    where = path.name
    columns = [cfg.item_col, cfg.tags_col, cfg.emb_col]
    pf = open_parquet(path, columns)
    check_type(pf, cfg.item_col, "int", where)
    check_type(pf, cfg.tags_col, "int list", where)
    check_type(pf, cfg.emb_col, "float list", where)
    n = pf.metadata.num_rows
    tags: np.ndarray | None = None
    emb: np.ndarray | None = None
    for row0, batch in record_batches(pf, columns, where):
        ids = scalar(batch.column(cfg.item_col), where, cfg.item_col, row0)
        i = first_index(ids != np.arange(row0, row0 + len(ids)))
        if i is not None:
            raise DataError(
                f"{where}: column {cfg.item_col!r} row {row0 + i}: item_id {ids[i]} differs from "
                f"its row index {row0 + i}; item_info must be sorted with row index == item_id"
            )
        width = None if tags is None else tags.shape[1]
        t = list_matrix(batch.column(cfg.tags_col), width, where, cfg.tags_col, row0)
        width = None if emb is None else emb.shape[1]
        e = list_matrix(batch.column(cfg.emb_col), width, where, cfg.emb_col, row0)
        check_finite(e, where, cfg.emb_col, row0)
        check_range(t, INT32_MAX, where, cfg.tags_col, row0, "tag id")
        if tags is None or emb is None:
            tags = np.empty((n, t.shape[1]), dtype=np.int32)
            emb = np.empty((n, e.shape[1]), dtype=np.float32)
        tags[row0 : row0 + len(t)] = t
        emb[row0 : row0 + len(e)] = e
    assert tags is not None and emb is not None
    for column, padding in ((cfg.tags_col, tags[0]), (cfg.emb_col, emb[0])):
        _check_padding_row(padding, where, column)
    features, sizes = read_item_features(pf, cfg, where, feature_vocab)
    vocab = tag_vocab(tags, cfg, where, num_tags)
    return ItemTable(tags, emb, vocab, features if sizes else None, sizes)


def _check_padding_row(values: np.ndarray, where: str, column: str) -> None:
    """Every left-padded list points at item 0, whose features the models take to be zeros; a
    file with anything else there was not written for this layout (SPEC section 1)."""
    i = first_index(values != 0)
    if i is not None:
        raise DataError(
            f"{where}: column {column!r} row 0: the padding item (item_id 0) must be all zeros, "
            f"found {values[i]} at position {i}; real items start at row 1"
        )


@dataclass(frozen=True)
class SplitFile:
    """A split's parquet file, opened and its column types checked; rows not yet read."""

    pf: pq.ParquetFile
    where: str  # the file name, for messages
    columns: list[str]
    has_labels: bool

    @property
    def num_rows(self) -> int:
        return int(self.pf.metadata.num_rows)


def open_split(data_dir: Path, split: str, cfg: DataConfig, require_labels: bool) -> SplitFile:
    path = Path(data_dir) / cfg.split_file(split)
    where = path.name
    base = [cfg.user_col, cfg.seq_col, cfg.item_col, *cfg.context_cols]
    pf = open_parquet(path, base + ([cfg.label_col] if require_labels else []))
    has_labels = cfg.label_col in pf.schema_arrow.names
    check_type(pf, cfg.user_col, "int", where)
    check_type(pf, cfg.seq_col, "int list", where)
    check_type(pf, cfg.item_col, "int", where)
    for col in cfg.context_cols:
        check_type(pf, col, "int", where)
    if has_labels:
        check_type(pf, cfg.label_col, "label", where)
    return SplitFile(pf, where, base + ([cfg.label_col] if has_labels else []), has_labels)


@dataclass(frozen=True)
class RowChecks:
    """What a split's rows are checked against: the item table's size, the context
    vocabularies (``vocab_bound`` says where they come from) and the history width."""

    num_items: int
    context_vocab_sizes: tuple[int, ...]
    vocab_bound: str = ""
    seq_len: int | None = None


def convert_rows(
    batch: pa.RecordBatch, name: str, cfg: DataConfig, where: str, row0: int, checks: RowChecks
) -> Split:
    """A record batch of a split file (its first row is file row ``row0``) as a checked Split."""
    items_bound = f"the rows of {cfg.item_file}"
    seq = list_matrix(batch.column(cfg.seq_col), checks.seq_len, where, cfg.seq_col, row0)
    check_range(seq, checks.num_items, where, cfg.seq_col, row0, "item id", items_bound)
    item = scalar(batch.column(cfg.item_col), where, cfg.item_col, row0)
    check_range(item, checks.num_items, where, cfg.item_col, row0, "item id", items_bound)
    context = np.empty((batch.num_rows, len(cfg.context_cols)), dtype=np.int32)
    for f, col in enumerate(cfg.context_cols):
        values = scalar(batch.column(col), where, col, row0)
        check_range(values, checks.context_vocab_sizes[f], where, col, row0, "value",
                    checks.vocab_bound)  # fmt: skip
        context[:, f] = values
    labels = None
    if cfg.label_col in batch.schema.names:
        labels = _labels(batch.column(cfg.label_col), where, cfg.label_col, row0).astype(np.float32)
    users = scalar(batch.column(cfg.user_col), where, cfg.user_col, row0).astype(np.int64)
    return Split(name, users, seq.astype(np.int32, copy=False), item.astype(np.int32),
                 context, labels)  # fmt: skip


def read_split(
    data_dir: Path, split: str, cfg: DataConfig, checks: RowChecks, *, require_labels: bool = True
) -> Split:
    """Read one split, checking its rows (``convert_rows``) against ``checks``."""
    f = open_split(data_dir, split, cfg, require_labels)
    n = f.num_rows
    users = np.empty(n, dtype=np.int64)
    target = np.empty(n, dtype=np.int32)
    context = np.empty((n, len(cfg.context_cols)), dtype=np.int32)
    labels = np.empty(n, dtype=np.float32) if f.has_labels else None
    history: np.ndarray | None = None
    for row0, batch in record_batches(f.pf, f.columns, f.where):
        rows = slice(row0, row0 + batch.num_rows)
        chunk = convert_rows(batch, split, cfg, f.where, row0, checks)
        if history is None:
            checks = replace(checks, seq_len=chunk.seq_len)
            history = np.empty((n, chunk.seq_len), dtype=np.int32)
        history[rows] = chunk.history
        target[rows] = chunk.target
        users[rows] = chunk.users
        context[rows] = chunk.context
        if labels is not None:
            assert chunk.labels is not None
            labels[rows] = chunk.labels
    assert history is not None
    return Split(split, users, history, target, context, labels)


def _labels(arr: pa.Array, where: str, column: str, row0: int) -> np.ndarray:
    """Labels of an integer or float column: each exactly 0 or 1 (a float 1.0 is a label, 0.5
    or nan is not)."""
    raw = scalar(arr, where, column, row0)
    y = raw.astype(np.float64)
    check_finite(y, where, column, row0)
    i = first_index((y != 0.0) & (y != 1.0))
    if i is not None:
        raise DataError(f"{where}: column {column!r} row {row0 + i}: label {raw[i]} is not 0 or 1")
    return y


def target_counts(data_dir: Path, split: str, cfg: DataConfig, num_items: int) -> np.ndarray:
    """How many rows of ``split`` have each item as their target: (num_items,) int64. Reads
    the target column only, with the checks ``read_split`` makes of it."""
    f = open_split(data_dir, split, cfg, require_labels=False)
    counts = np.zeros(num_items, dtype=np.int64)
    bound = f"the rows of {cfg.item_file}"
    for row0, batch in record_batches(f.pf, [cfg.item_col], f.where):
        item = scalar(batch.column(cfg.item_col), f.where, cfg.item_col, row0)
        check_range(item, num_items, f.where, cfg.item_col, row0, "item id", bound)
        counts += np.bincount(item, minlength=num_items)
    return counts
