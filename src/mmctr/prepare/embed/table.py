"""Read the item table that ``mmctr embed`` works on, and write its output parquet."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mmctr.atomic import atomic_path
from mmctr.data.checks import check_not_null, open_parquet
from mmctr.errors import ConfigError, DataError

SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class ItemsInput:
    """Columns of an item table; row i of each is one item."""

    ids: np.ndarray  # (N,) int64
    texts: list[str | None] | None  # None when no text column was asked for
    image_paths: list[str | None] | None  # None when no image column was asked for


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        try:
            return next(csv.reader(fh))
        except StopIteration:
            raise DataError(f"{path}: file is empty") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not a readable CSV file ({exc})") from None


def _read_table(path: Path, columns: list[str], strings: list[str]) -> pa.Table:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.suffix.lower() == ".parquet":
        pf = open_parquet(path, columns)
        return pf.read(columns=columns)
    if path.suffix.lower() != ".csv":
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    header = _csv_header(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path.name}: missing column {missing[0]!r} (has: {', '.join(header)})")
    options = pa_csv.ConvertOptions(
        include_columns=columns, column_types={c: pa.string() for c in strings}
    )
    try:
        table = pa_csv.read_csv(path, convert_options=options)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc})") from None
    if table.num_rows == 0:
        raise DataError(f"{path.name}: file is empty (0 rows)")
    return table


def _strings(table: pa.Table, column: str, where: str) -> list[str | None]:
    col = table.column(column)
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DataError(f"{where}: column {column!r} must hold strings, found {col.type}")
    values: list[str | None] = col.to_pylist()
    return values


def read_items(
    path: str | Path, *, id_col: str, text_col: str | None = None, image_col: str | None = None
) -> ItemsInput:
    """Read ids, texts and image paths from a .csv or .parquet file.

    Null or empty texts and image paths mean 'no text' / 'no image' for that item; a null id
    is an error naming the row. Duplicate ids are checked by the pipeline.
    """
    path = Path(path)
    if text_col is None and image_col is None:
        raise ConfigError("no modality selected: pass --text-col and/or --image-col")
    strings = [c for c in (text_col, image_col) if c is not None]
    columns = list(dict.fromkeys([id_col, *strings]))
    table = _read_table(path, columns, strings)
    where = path.name
    ids = table.column(id_col).combine_chunks()
    if not pa.types.is_integer(ids.type):
        raise DataError(f"{where}: column {id_col!r} must hold integer item ids, found {ids.type}")
    check_not_null(ids, where, id_col, 0, "item id is null")
    return ItemsInput(
        ids=ids.to_numpy(zero_copy_only=False).astype(np.int64),
        texts=None if text_col is None else _strings(table, text_col, where),
        image_paths=None if image_col is None else _strings(table, image_col, where),
    )


def write_embeddings(path: str | Path, ids: np.ndarray, emb: np.ndarray, column: str) -> None:
    """Write ``item_id`` int64 and ``column`` list<float32> ((dim,) per row), atomically."""
    n, dim = emb.shape
    offsets = pa.array(np.arange(0, n * dim + 1, dim, dtype=np.int64), type=pa.int64())
    values = pa.array(np.ascontiguousarray(emb, dtype=np.float32).reshape(-1), type=pa.float32())
    lists = pa.LargeListArray.from_arrays(offsets, values).cast(pa.list_(pa.float32()))
    table = pa.table({"item_id": pa.array(ids, type=pa.int64()), column: lists})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
