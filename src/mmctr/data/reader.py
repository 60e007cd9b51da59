"""Read and validate data sets in the challenge layout into contiguous numpy arrays.

Every check names the file, the column and the first offending row, so that a user can find
the problem without a debugger. Large files are read in record batches straight into
preallocated arrays, so memory stays near the size of the result.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmctr.config.data import DataConfig
from mmctr.errors import DataError

READ_ROWS = 262_144  # rows per record batch: bounds the transient memory of a read


@dataclass(frozen=True)
class ItemTable:
    """Features of every item, indexed by item id; row 0 is the zero padding item."""

    tags: np.ndarray  # (N, T) int32, left-padded with 0
    emb: np.ndarray  # (N, D) float32, frozen multimodal embedding
    num_tags: int  # tag vocabulary including padding

    @property
    def num_items(self) -> int:
        return int(self.tags.shape[0])


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


def open_parquet(path: Path, required: list[str]) -> pq.ParquetFile:
    """Open a parquet file and check it exists, is readable, non-empty and has the columns."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    names = set(pf.schema_arrow.names)
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(
            f"{path.name}: missing column {missing[0]!r} (has: {', '.join(pf.schema_arrow.names)})"
        )
    if pf.metadata.num_rows == 0:
        raise DataError(f"{path.name}: file is empty (0 rows)")
    return pf


def record_batches(pf: pq.ParquetFile, columns: list[str]) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield (first row number, batch) over the chosen columns."""
    start = 0
    for batch in pf.iter_batches(batch_size=READ_ROWS, columns=columns):
        yield start, batch
        start += batch.num_rows


def check_type(pf: pq.ParquetFile, column: str, kind: str, where: str) -> None:
    """kind: 'int', 'float', 'label' (int or float), 'int list' or 'float list'."""
    dtype = pf.schema_arrow.field(column).type
    element = dtype
    is_list = pa.types.is_list(dtype) or pa.types.is_large_list(dtype)
    is_list = is_list or pa.types.is_fixed_size_list(dtype)
    if kind.endswith("list"):
        if not is_list:
            raise DataError(f"{where}: column {column!r} must be a list, found {dtype}")
        element = dtype.value_type
    elif is_list:
        raise DataError(f"{where}: column {column!r} must be a scalar, found {dtype}")
    base = kind.split()[0]
    ok = {
        "int": pa.types.is_integer(element),
        "float": pa.types.is_floating(element),
        "label": pa.types.is_integer(element) or pa.types.is_floating(element),
    }[base]
    if not ok:
        wanted = {"int": "integers", "float": "floats", "label": "numbers"}[base]
        raise DataError(f"{where}: column {column!r} must hold {wanted}, found {dtype}")


def first_index(mask: np.ndarray) -> int | None:
    """Index of the first True in a flat boolean array, or None."""
    hits = np.flatnonzero(mask)
    return int(hits[0]) if hits.size else None


def check_not_null(arr: pa.Array, where: str, column: str, row0: int, what: str) -> None:
    i = first_index(arr.is_null().to_numpy(zero_copy_only=False)) if arr.null_count else None
    if i is not None:
        raise DataError(f"{where}: column {column!r} row {row0 + i}: {what}")


def list_matrix(arr: pa.Array, width: int | None, where: str, column: str, row0: int) -> np.ndarray:
    """A list column as an (n, width) array; every list must have the same length."""
    check_not_null(arr, where, column, row0, "value is null")
    lengths = arr.value_lengths().to_numpy(zero_copy_only=False)
    if width is None:
        width = int(lengths[0])
    i = first_index(lengths != width)
    if i is not None:
        raise DataError(
            f"{where}: column {column!r} row {row0 + i}: list has {lengths[i]} values, "
            f"expected {width} like the other rows"
        )
    flat = arr.flatten()
    i = first_index(flat.is_null().to_numpy(zero_copy_only=False)) if flat.null_count else None
    if i is not None:
        raise DataError(f"{where}: column {column!r} row {row0 + i // width}: list holds a null")
    return flat.to_numpy(zero_copy_only=False).reshape(len(arr), width)


def scalar(arr: pa.Array, where: str, column: str, row0: int) -> np.ndarray:
    check_not_null(arr, where, column, row0, "value is null")
    return arr.to_numpy(zero_copy_only=False)


def check_range(
    values: np.ndarray, high: int, where: str, column: str, row0: int, what: str
) -> None:
    """Every value must lie in [0, high); name the first offender and its row."""
    bad = (values < 0) | (values >= high)
    if bad.any():
        flat = int(np.argmax(bad.reshape(-1)))
        width = 1 if values.ndim == 1 else values.shape[1]
        value = values.reshape(-1)[flat]
        raise DataError(
            f"{where}: column {column!r} row {row0 + flat // width}: {what} {value} is out of "
            f"range (valid: 0..{high - 1})"
        )


def check_finite(values: np.ndarray, where: str, column: str, row0: int) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        flat = int(np.argmax(bad.reshape(-1)))
        width = 1 if values.ndim == 1 else values.shape[1]
        raise DataError(
            f"{where}: column {column!r} row {row0 + flat // width}: value "
            f"{values.reshape(-1)[flat]} is not finite"
        )


def read_item_table(data_dir: Path, cfg: DataConfig, *, num_tags: int | None = None) -> ItemTable:
    """Read item_info. ``num_tags`` (else ``cfg.num_tags``, else max + 1) bounds the tag ids."""
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
    for row0, batch in record_batches(pf, columns):
        ids = scalar(batch.column(cfg.item_col), where, cfg.item_col, row0)
        i = first_index(ids != np.arange(row0, row0 + len(ids)))
        if i is not None:
            raise DataError(
                f"{where}: column {cfg.item_col!r} row {row0 + i}: item_id {ids[i]} differs from "
                f"its row index {row0 + i}; item_info must be sorted with row index == item_id"
            )
        t = list_matrix(
            batch.column(cfg.tags_col),
            None if tags is None else tags.shape[1],
            where,
            cfg.tags_col,
            row0,
        )
        e = list_matrix(
            batch.column(cfg.emb_col),
            None if emb is None else emb.shape[1],
            where,
            cfg.emb_col,
            row0,
        )
        check_finite(e, where, cfg.emb_col, row0)
        check_range(t, np.iinfo(np.int32).max, where, cfg.tags_col, row0, "tag id")
        if tags is None or emb is None:
            tags = np.empty((n, t.shape[1]), dtype=np.int32)
            emb = np.empty((n, e.shape[1]), dtype=np.float32)
        tags[row0 : row0 + len(t)] = t
        emb[row0 : row0 + len(e)] = e
    assert tags is not None and emb is not None
    # padding id 0 must embed to zero whatever the file holds in row 0
    tags[0] = 0
    emb[0] = 0.0
    vocab = num_tags or cfg.num_tags or int(tags.max()) + 1
    check_range(tags, vocab, where, cfg.tags_col, 0, "tag id")
    return ItemTable(tags=tags, emb=emb, num_tags=vocab)


def infer_context_vocab(data_dir: Path, cfg: DataConfig, splits: list[str]) -> tuple[int, ...]:
    """max + 1 of each context column over the split files that exist."""
    if not cfg.context_cols:
        return ()
    highest = np.zeros(len(cfg.context_cols), dtype=np.int64)
    for split in splits:
        path = Path(data_dir) / cfg.split_file(split)
        if not path.is_file():
            continue
        pf = open_parquet(path, list(cfg.context_cols))
        for col in cfg.context_cols:
            check_type(pf, col, "int", path.name)
        for row0, batch in record_batches(pf, list(cfg.context_cols)):
            for f, col in enumerate(cfg.context_cols):
                values = scalar(batch.column(col), path.name, col, row0)
                check_range(values, np.iinfo(np.int32).max, path.name, col, row0, "value")
                highest[f] = max(highest[f], int(values.max()))
    return tuple(int(h) + 1 for h in highest)


def read_split(
    data_dir: Path,
    split: str,
    cfg: DataConfig,
    *,
    num_items: int,
    context_vocab_sizes: tuple[int, ...],
    require_labels: bool = True,
    seq_len: int | None = None,
) -> Split:
    """Read one split, checking ids against item_info and context values against vocabularies."""
    path = Path(data_dir) / cfg.split_file(split)
    where = path.name
    base = [cfg.user_col, cfg.seq_col, cfg.item_col, *cfg.context_cols]
    pf = open_parquet(path, base + ([cfg.label_col] if require_labels else []))
    has_labels = cfg.label_col in pf.schema_arrow.names
    columns = base + ([cfg.label_col] if has_labels else [])
    check_type(pf, cfg.user_col, "int", where)
    check_type(pf, cfg.seq_col, "int list", where)
    check_type(pf, cfg.item_col, "int", where)
    for col in cfg.context_cols:
        check_type(pf, col, "int", where)
    if has_labels:
        check_type(pf, cfg.label_col, "label", where)
    n = pf.metadata.num_rows
    users = np.empty(n, dtype=np.int64)
    target = np.empty(n, dtype=np.int32)
    context = np.empty((n, len(cfg.context_cols)), dtype=np.int32)
    labels = np.empty(n, dtype=np.float32) if has_labels else None
    history: np.ndarray | None = None
    for row0, batch in record_batches(pf, columns):
        rows = slice(row0, row0 + batch.num_rows)
        seq = list_matrix(batch.column(cfg.seq_col), seq_len, where, cfg.seq_col, row0)
        check_range(seq, num_items, where, cfg.seq_col, row0, "item id")
        if history is None:
            seq_len = seq.shape[1]
            history = np.empty((n, seq_len), dtype=np.int32)
        history[rows] = seq
        item = scalar(batch.column(cfg.item_col), where, cfg.item_col, row0)
        check_range(item, num_items, where, cfg.item_col, row0, "item id")
        target[rows] = item
        users[rows] = scalar(batch.column(cfg.user_col), where, cfg.user_col, row0)
        for f, col in enumerate(cfg.context_cols):
            values = scalar(batch.column(col), where, col, row0)
            check_range(values, context_vocab_sizes[f], where, col, row0, "value")
            context[rows, f] = values
        if labels is not None:
            y = scalar(batch.column(cfg.label_col), where, cfg.label_col, row0).astype(np.float64)
            check_finite(y, where, cfg.label_col, row0)
            i = first_index((y != 0.0) & (y != 1.0))
            if i is not None:
                raise DataError(
                    f"{where}: column {cfg.label_col!r} row {row0 + i}: label {y[i]} is not 0 or 1"
                )
            labels[rows] = y
    assert history is not None
    return Split(split, users, history, target, context, labels)
