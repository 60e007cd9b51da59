"""Property: any mutation of a valid data set loads, or fails as bad input, never otherwise.

A mutation (drawn by hypothesis from a fixed set of kinds) changes one file of a small valid
set: a cell set to a random value of its column's type, a column dropped, renamed, added,
duplicated or retyped, rows cut, the file truncated or overwritten in part. Loading then either
succeeds, with the same arrays as before where the mutation changes nothing the reader uses,
or raises an MmctrError (exit 2) whose message names a file; any other exception is a bug.
Bounded and derandomized, so CI sees the same examples every run.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mmctr.data import DataConfig, Dataset, load_dataset
from mmctr.errors import MmctrError

FILES = ("train", "valid", "test", "item_info")
SPLITS = ("train", "valid", "test")
ROWS = 40  # rows kept of each split: small files, fast examples
PROPERTY = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def valid_set(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set with its splits cut to ROWS rows (item_info whole: the splits use it)."""
    out = tmp_path_factory.mktemp("valid-set")
    for split in SPLITS:
        table = pq.read_table(tiny_data_master / f"{split}.parquet").slice(0, ROWS)
        pq.write_table(table, out / f"{split}.parquet")
    shutil.copy(tiny_data_master / "item_info.parquet", out)
    return out


@pytest.fixture(scope="module")
def baseline(valid_set: Path) -> Dataset:
    return load_dataset(valid_set, DataConfig(), SPLITS)


# -- values of a column's type -----------------------------------------------------------------

INTS = st.one_of(
    st.integers(0, 12), st.integers(-3, 400), st.integers(-(2**62), 2**62), st.sampled_from([10**9])
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32)


def value_of(kind: pa.DataType) -> st.SearchStrategy[object]:
    """A random value of an arrow type, null included; lists of random length."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        inner = value_of(kind.value_type)
        return st.one_of(
            st.none(), st.lists(inner, max_size=6), st.lists(inner, min_size=128, max_size=128)
        )
    if pa.types.is_floating(kind):
        return st.one_of(st.none(), FLOATS, st.sampled_from([0.0, 1.0]))
    return st.one_of(st.none(), INTS)


# -- the mutations: each rewrites one file and says whether the reader should see no change ------

Mutation = Callable[[Path], bool]  # rewrites the file at path; True when it is a no-op for reading
KINDS = ("rewrite", "narrow", "add", "cell", "drop", "rename", "twice", "retype", "rows", "damage")
RETYPES = ("string", "dictionary", "large_list", "wrap in list", "int32", "uint64", "float64")


def rewrite(change: Callable[[pa.Table], pa.Table], no_op: bool = False) -> Mutation:
    def mutate(path: Path) -> bool:
        pq.write_table(change(pq.read_table(path)), path)
        return no_op

    return mutate


def set_cell(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    values = table.column(column).to_pylist()
    values[row % table.num_rows] = value
    kind = table.schema.field(column).type
    i = table.schema.get_field_index(column)
    try:
        array = pa.array(values, type=kind)
    except (pa.ArrowInvalid, OverflowError):  # out of the type's range: let arrow pick one
        array = pa.array(values)
    return table.set_column(i, column, array)


def retype(table: pa.Table, column: str, target: str) -> pa.Table:
    """Change a column's type: to text, float, a narrower or unsigned int, a large list..."""
    col = table.column(column)
    kind = col.type
    i = table.schema.get_field_index(column)
    if target == "string":
        new = pa.array([None if v is None else str(v) for v in col.to_pylist()])
    elif target == "dictionary":
        new = pc.dictionary_encode(retype(table, column, "string").column(column))
    elif target == "large_list":
        values = col.to_pylist() if pa.types.is_list(kind) else [[v] for v in col.to_pylist()]
        element = kind.value_type if pa.types.is_list(kind) else kind
        new = pa.array(values, type=pa.large_list(element))
    elif target == "wrap in list":
        new = pa.array([[v] for v in col.to_pylist()])
    else:  # a numeric type, applied to the values of a list column too
        element = {"int32": pa.int32(), "uint64": pa.uint64(), "float64": pa.float64()}[target]
        goal = pa.list_(element) if pa.types.is_list(kind) else element
        try:
            new = col.cast(goal)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            new = col.cast(goal, safe=False)
    return table.set_column(i, column, new)


def damage(cut: bool, at: float, size: int) -> Mutation:
    """Truncate the file at a share ``at`` of its size, or overwrite ``size`` bytes there."""

    def mutate(path: Path) -> bool:
        raw = bytearray(path.read_bytes())
        start = int(at * len(raw))
        if cut:
            raw = raw[:start]
        else:
            raw[start : start + size] = bytes((37 * k + 11) % 256 for k in range(size))
        path.write_bytes(bytes(raw))
        return False

    return mutate


@st.composite
def mutations(draw: st.DrawFn, columns: dict[str, pa.Schema]) -> tuple[str, str, Mutation]:
    """(file, a description, the mutation) for one of the four files."""
    name = draw(st.sampled_from(FILES))
    schema = columns[name]
    column = draw(st.sampled_from(schema.names))
    kind = draw(st.sampled_from(KINDS))
    if kind == "rewrite":
        return name, kind, rewrite(lambda t: t, no_op=True)
    if kind == "narrow":  # int64 -> int32 everywhere: the reader takes any integer width
        return name, kind, rewrite(lambda t: t.cast(narrowed(t.schema)), no_op=True)
    if kind == "add":
        extra = draw(st.sampled_from(["extra", "item_seq_2", "Label"]))
        return name, f"add {extra}", rewrite(lambda t: t.append_column(extra, t.column(0)), True)
    if kind == "cell":
        row, value = draw(st.integers(0, 299)), draw(value_of(schema.field(column).type))
        return (
            name,
            f"{column}[{row}] = {value!r:.60}",
            rewrite(lambda t: set_cell(t, column, row, value)),
        )
    if kind == "drop":
        return name, f"drop {column}", rewrite(lambda t: t.drop_columns([column]))
    if kind == "rename":
        to = draw(st.sampled_from(["x", "Item_ID", "label ", "item_tags"]))
        names = [to if c == column else c for c in schema.names]
        return name, f"rename {column} {to}", rewrite(lambda t: t.rename_columns(names))
    if kind == "twice":
        return name, f"twice {column}", rewrite(lambda t: t.append_column(column, t.column(column)))
    if kind == "retype":
        target = draw(st.sampled_from(RETYPES))
        return name, f"retype {column} {target}", rewrite(lambda t: retype(t, column, target))
    if kind == "rows":
        keep = draw(st.integers(0, 60))
        return name, f"keep {keep} rows", rewrite(lambda t: t.slice(0, keep))
    cut, at, size = draw(st.booleans()), draw(st.floats(0.0, 1.0)), draw(st.integers(1, 64))
    return name, f"damage cut={cut} at={at:.3f} size={size}", damage(cut, at, size)


def narrowed(schema: pa.Schema) -> pa.Schema:
    def narrow(kind: pa.DataType) -> pa.DataType:
        if kind == pa.int64():
            return pa.int32()
        if pa.types.is_list(kind):
            return pa.list_(narrow(kind.value_type))
        return kind

    return pa.schema([(f.name, narrow(f.type)) for f in schema])


def same(a: Dataset, b: Dataset) -> bool:
    arrays = [(a.items.tags, b.items.tags), (a.items.emb, b.items.emb)]
    for split in SPLITS:
        x, y = a[split], b[split]
        arrays += [(x.users, y.users), (x.history, y.history), (x.target, y.target)]
        arrays += [(x.context, y.context), (x.labels, y.labels)]
    return a.schema == b.schema and all(np.array_equal(p, q) for p, q in arrays)


def schemas(valid_set: Path) -> dict[str, pa.Schema]:
    return {name: pq.read_schema(valid_set / f"{name}.parquet") for name in FILES}


def test_every_mutation_loads_or_fails_as_bad_input(valid_set: Path, baseline: Dataset) -> None:
    @PROPERTY
    @given(st.data())
    def check(data: st.DataObject) -> None:
        name, what, mutate = data.draw(mutations(schemas(valid_set)), label="mutation")
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / "data"
            shutil.copytree(valid_set, copy)
            no_op = mutate(copy / f"{name}.parquet")
            try:
                loaded = load_dataset(copy, DataConfig(), SPLITS)
            except MmctrError as exc:
                assert ".parquet" in str(exc), f"{name}: {what}: {exc}"
                return
        assert not no_op or same(loaded, baseline), f"{name}: {what} changed what was read"

    check()
