"""Read the converter's inputs: an interaction log and an item table, as CSV, TSV or parquet.

Every check names the file, the column and the first offending line (CSV) or row (parquet), so
that a bad input is fixed from the message alone. Original ids stay in their own type: int64
when every id file holds integers, str otherwise.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from mmctr.errors import DataError

Array = np.ndarray[Any, Any]
DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}


@dataclass(frozen=True)
class Events:
    """An interaction log; entry e of every array is event e, in file order."""

    users: Array  # (E,) original user ids, int64 or object (str)
    items: Array  # (E,) original item ids, int64 or object (str)
    order: Array  # (E,) int64 or float64: sorts a user's events, earliest first
    source: str  # file name, for messages
    item_col: str = "item_id"
    csv: bool = False  # rows are CSV lines: messages then give line numbers
    lines: Array | None = None  # (E,) line of each event, for a file with several a line

    def position(self, row: int) -> str:
        """Where event ``row`` is in its file, for messages: a line, or a parquet row."""
        if self.lines is not None:
            return f"{self.source} line {int(self.lines[row])}"
        return where(self.source, row, self.csv)


@dataclass(frozen=True)
class Items:
    """The item catalogue; entry i of every field describes item ``ids[i]``."""

    ids: Array  # (N,) original item ids, unique, int64 or object (str)
    titles: list[str | None] | None  # None when the file has no title column
    image_paths: list[str | None] | None  # absolute paths; None entries for missing images
    tags: list[list[str]] | None  # given tags; None -> parse #hashtags from the titles
    source: str
    id_col: str = "item_id"


def show(value: Any) -> str:
    """An id as the user wrote it: 10 or 'abc', never np.int64(10)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def where(source: str, row: int, csv: bool) -> str:
    """Human position of data row ``row`` (0-based): a CSV line number counts the header."""
    return f"{source} line {row + 2}" if csv else f"{source} row {row}"


def read_table(path: Path, what: str) -> pa.Table:
    """A whole CSV/TSV (header row required) or parquet file; empty files are an error."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, where the {what} file should be")
    if not path.is_file():
        raise DataError(f"{what} file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            table = pq.read_table(path)
        elif suffix in DELIMITERS:
            options = pacsv.ParseOptions(delimiter=DELIMITERS[suffix])
            table = pacsv.read_csv(path, parse_options=options)
        else:
            raise DataError(f"{path}: unknown file type {suffix!r}; use .csv, .tsv or .parquet")
    except (pa.ArrowInvalid, OSError) as exc:
        if path.stat().st_size == 0 or "Empty CSV file" in str(exc):
            raise DataError(f"{path.name}: file is empty") from None
        if "CSV parse error" in str(exc):
            raise _bad_csv_line(path, DELIMITERS.get(suffix, ","), exc) from None
        raise DataError(f"{path.name}: cannot read {what} file ({exc})") from None
    if table.num_rows == 0:
        raise DataError(f"{path.name}: file has no data rows")
    return table


def _bad_csv_line(path: Path, delimiter: str, exc: Exception) -> DataError:
    """Name the line of a CSV parse error: the threaded reader does not know it, so read the
    file again on one thread (only on this failing path), which numbers the rows."""
    bad: list[Any] = []

    def first_bad(row: Any) -> str:
        bad.append(row)
        return "error"

    options = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=first_bad)
    with contextlib.suppress(pa.ArrowInvalid, OSError):  # the error we know already
        pacsv.read_csv(
            path, parse_options=options, read_options=pacsv.ReadOptions(use_threads=False)
        )
    if not bad or bad[0].number is None:
        return DataError(f"{path.name}: cannot parse the file as CSV ({exc})")
    row = bad[0]
    with open(path, encoding="utf-8", errors="replace") as fh:
        header = fh.readline().strip()
    return DataError(
        f"{path.name} line {row.number}: {row.actual_columns} fields where the header has "
        f"{row.expected_columns} ({header}): {row.text!r}"
    )


def require(table: pa.Table, column: str, source: str, option: str) -> pa.ChunkedArray:
    if column not in table.column_names:
        raise DataError(
            f"{source}: missing column {column!r} (has: {', '.join(table.column_names)}); "
            f"name the right one with {option}"
        )
    return table.column(column)


def check_no_nulls(col: pa.ChunkedArray, source: str, name: str, csv: bool) -> None:
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{where(source, row, csv)}: column {name!r} is empty (null)")


def utf8(col: pa.ChunkedArray, source: str, name: str, csv: bool) -> pa.ChunkedArray:
    """A CSV column holding bytes that are not UTF-8 is read as binary: name the first such
    value's line, else return the column as strings."""
    if not (pa.types.is_binary(col.type) or pa.types.is_large_binary(col.type)):
        return col
    for row, value in enumerate(col.to_pylist()):
        try:
            (value or b"").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{where(source, row, csv)}: column {name!r} is not UTF-8 text ({exc.reason} at "
                f"byte {exc.start} of {value!r}); save the file as UTF-8"
            ) from None
    return col.cast(pa.string())


def id_values(col: pa.ChunkedArray, source: str, name: str, csv: bool) -> pa.ChunkedArray:
    """An id column as int64 or string; nulls, floats and empty strings are errors."""
    check_no_nulls(col, source, name, csv)
    col = utf8(col, source, name, csv)
    if pa.types.is_integer(col.type):
        return col.cast(pa.int64())
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        col = pc.utf8_trim_whitespace(col.cast(pa.string()))
        empty = pc.equal(pc.utf8_length(col), 0).to_numpy(zero_copy_only=False)
        if empty.any():
            row = int(np.flatnonzero(empty)[0])
            raise DataError(f"{where(source, row, csv)}: column {name!r} holds an empty id")
        return col
    raise DataError(f"{source}: column {name!r} must hold integer or string ids, found {col.type}")


def unify_ids(*cols: pa.ChunkedArray) -> list[Array]:
    """Ids of several files in one comparable type: int64 if all are integers, else str."""
    if all(pa.types.is_integer(c.type) for c in cols):
        return [c.to_numpy() for c in cols]
    return [np.asarray(c.cast(pa.string()).to_pylist(), dtype=object) for c in cols]


def order_values(col: pa.ChunkedArray, source: str, name: str, csv: bool) -> Array:
    """A sort key from numbers or timestamps/dates (ISO 8601 strings are parsed by the reader)."""
    check_no_nulls(col, source, name, csv)
    kind = col.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):
        col = col.cast(pa.timestamp("us")) if pa.types.is_date(kind) else col
        return np.asarray(col.cast(pa.int64()).to_numpy(), dtype=np.int64)
    if pa.types.is_integer(kind):
        return np.asarray(col.to_numpy(), dtype=np.int64)
    if pa.types.is_floating(kind):
        values = np.asarray(col.to_numpy(), dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{where(source, row, csv)}: column {name!r} is not a finite number")
        return values
    raise DataError(
        f"{source}: order column {name!r} must hold numbers or timestamps (ISO 8601), found {kind}"
    )


def load_inputs(
    events_path: Path,
    items_path: Path,
    *,
    user_col: str = "user_id",
    item_col: str = "item_id",
    order_col: str = "timestamp",
    items_id_col: str | None = None,
    title_col: str = "title",
    image_col: str = "image_path",
    tags_col: str = "tags",
    tag_sep: str = "|",
    strict: Collection[str] = (),
) -> tuple[Events, Items]:
    """Read an events file and an items file into Events and Items with ids of one type.

    The title, image and tags columns of the items file are optional: each is used when
    present; one named in ``strict`` (given explicitly by the user) must exist. Relative image
    paths are taken relative to the items file's folder. Tags are a list<string> column or a
    string column split on ``tag_sep``.
    """
    events_path, items_path = Path(events_path), Path(items_path)
    items_id_col = items_id_col or item_col
    table = read_table(events_path, "events")
    src, csv = events_path.name, events_path.suffix.lower() in DELIMITERS
    users = id_values(require(table, user_col, src, "--user-col"), src, user_col, csv)
    items = id_values(require(table, item_col, src, "--item-col"), src, item_col, csv)
    order = order_values(require(table, order_col, src, "--order-col"), src, order_col, csv)
    del table

    itable = read_table(items_path, "items")
    isrc, icsv = items_path.name, items_path.suffix.lower() in DELIMITERS
    ids = id_values(require(itable, items_id_col, isrc, "--items-id-col"), isrc, items_id_col, icsv)
    present: dict[str, pa.ChunkedArray | None] = {}
    for col, option in (
        (title_col, "--title-col"),
        (image_col, "--image-col"),
        (tags_col, "--tags-col"),
    ):
        if col in strict:
            require(itable, col, isrc, option)
        present[col] = itable.column(col) if col in itable.column_names else None
    titles = text_values(present[title_col], isrc, title_col, icsv)
    images = text_values(present[image_col], isrc, image_col, icsv)
    if images is not None:
        images = [str((items_path.parent / p).resolve()) if p else None for p in images]
    tags = _tag_lists(present[tags_col], isrc, tags_col, tag_sep, icsv)

    (user_ids,) = unify_ids(users)
    event_items, item_ids = unify_ids(items, ids)
    duplicate_check(item_ids, isrc, items_id_col, icsv)
    return (
        Events(user_ids, event_items, order, src, item_col, csv),
        Items(item_ids, titles, images, tags, isrc, items_id_col),
    )


def text_values(
    col: pa.ChunkedArray | None, source: str, name: str, csv: bool
) -> list[str | None] | None:
    """A text column as strings, empty values as None; None when there is no column."""
    if col is None:
        return None
    col = utf8(col, source, name, csv)
    kind = col.type
    if pa.types.is_null(kind):  # an all-empty CSV column is inferred as null type
        return [None] * len(col)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        col = col.cast(pa.string())  # e.g. a CSV title column that happens to be all numbers
    elif not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{source}: column {name!r} must hold text, found {kind}")
    return [s if s else None for s in col.to_pylist()]


def _tag_lists(
    col: pa.ChunkedArray | None, source: str, name: str, sep: str, csv: bool
) -> list[list[str]] | None:
    if col is None:
        return None
    kind = col.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if not pa.types.is_string(kind.value_type):
            raise DataError(f"{source}: column {name!r} must list strings, found {kind}")
        return [[t for t in (row or []) if t] for row in col.to_pylist()]
    strings = text_values(col, source, name, csv)
    assert strings is not None
    return [s.split(sep) if s else [] for s in strings]


def duplicate_check(ids: Array, source: str, name: str, csv: bool) -> None:
    """Ids must be unique; name the first repeated value and two of its rows."""
    order = np.argsort(ids, kind="stable")
    same = ids[order][1:] == ids[order][:-1]
    if same.any():
        k = int(np.flatnonzero(same)[0])
        first, second = sorted((int(order[k]), int(order[k + 1])))
        raise DataError(
            f"{source}: column {name!r}: id {show(ids[first])} appears more than once "
            f"({where(source, first, csv)} and {where(source, second, csv)}; "
            f"{int(same.sum())} repeats in all); item ids must be unique"
        )
