"""The checks every reader of a parquet file shares: open it, type its columns, bound its values.

Each names the file, the column and the first offending row, so that a user can find the
problem without a debugger. Values are checked a record batch at a time, so a check never
holds more than one batch beyond the arrays being filled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmctr.errors import DataError

READ_ROWS = 262_144  # rows per record batch: bounds the transient memory of a read


def open_parquet(path: Path, required: list[str]) -> pq.ParquetFile:
    """Open a parquet file and check it exists, is readable, non-empty and has the columns."""
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a parquet file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        pf = pq.ParquetFile(path)
    except PermissionError as exc:
        raise DataError(f"{path}: cannot be read: Permission denied ({exc})") from None
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    names = pf.schema_arrow.names
    twice = next((c for c in names if names.count(c) > 1), None)
    if twice is not None:
        raise DataError(
            f"{path.name}: column {twice!r} appears {names.count(twice)} times; "
            "every column name must be unique"
        )
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"{path.name}: missing column {missing[0]!r} (has: {', '.join(names)})")
    if pf.metadata.num_rows == 0:
        raise DataError(f"{path.name}: file is empty (0 rows)")
    return pf


def record_batches(
    pf: pq.ParquetFile, columns: list[str], where: str
) -> Iterator[tuple[int, pa.RecordBatch]]:
    """Yield (first row number, batch) over the chosen columns; damaged pages are a DataError."""
    start = 0
    batches = pf.iter_batches(batch_size=READ_ROWS, columns=columns)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as exc:
            raise _damaged(pf, columns, where, exc) from None
        yield start, batch
        start += batch.num_rows


def _damaged(pf: pq.ParquetFile, columns: list[str], where: str, exc: Exception) -> DataError:
    """The error for a file whose footer reads but whose data does not: find the column and
    rows by reading each row group's columns alone (only ever on this failing path)."""
    first = 0
    for group in range(pf.num_row_groups):
        rows = pf.metadata.row_group(group).num_rows
        for column in columns:
            try:
                pf.read_row_group(group, columns=[column])
            except (pa.ArrowException, OSError):
                return DataError(
                    f"{where}: column {column!r} rows {first}..{first + rows - 1}: the file is "
                    f"damaged, its data cannot be read ({exc})"
                )
        first += rows
    return DataError(f"{where}: the file is damaged, its data cannot be read ({exc})")


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
        rule = ""
        if base == "int" and pa.types.is_floating(element):  # never cast: 2.5 or nan has no id
            rule = "; ids are never cast from floats: write the column with an integer type"
        raise DataError(f"{where}: column {column!r} must hold {wanted}, found {dtype}{rule}")


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
    values: np.ndarray,
    high: int,
    where: str,
    column: str,
    row0: int,
    what: str,
    bound: str = "",
) -> None:
    """Every value must lie in [0, high); name the first offender, its row and, in ``bound``,
    where ``high`` comes from (``data.num_tags``, the trained model, ...)."""
    bad = (values < 0) | (values >= high)
    if bad.any():
        flat = int(np.argmax(bad.reshape(-1)))
        width = 1 if values.ndim == 1 else values.shape[1]
        value = values.reshape(-1)[flat]
        raise DataError(
            f"{where}: column {column!r} row {row0 + flat // width}: {what} {value} is out of "
            f"range (valid: 0..{high - 1}{', ' + bound if bound else ''})"
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
