"""The bad-input corpus of test_corpus.py: each case breaks one input of a command that works.

A case is a name (its test id and its row in docs/reliability.md), the command it runs, a setup
that breaks one input of a ``Bench``, and the words its message must contain: the file, the
column or config key, and the row or line where there is one.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr.prepare import synth

CPU = Path(__file__).resolve().parents[1] / "configs" / "cpu.toml"
TRAIN, VALID, TEST, INFO = "train", "valid", "test", "item_info"


@dataclass
class Bench:
    """The inputs of one case: valid until its setup breaks one of them."""

    tmp: Path
    data: Path  # a private copy of the tiny data set
    config: Path  # the tiny TOML config (tiny.toml)
    run: Path  # a run trained on the tiny data (evaluate, predict)
    monkeypatch: pytest.MonkeyPatch
    split: str = "valid"  # evaluate's --split
    out_dir: Path = field(init=False)  # receives the command's output; must stay empty

    def __post_init__(self) -> None:
        self.out_dir = self.tmp / "out"
        self.out_dir.mkdir()
        self.inputs = self.tmp / "in"
        write_convert_inputs(self.inputs)

    def parquet(self, name: str) -> Path:
        return self.data / f"{name}.parquet"

    def argv(self, command: str) -> list[str]:
        out, i = self.out_dir, self.inputs
        args: dict[str, list[str | Path]] = {
            "train": ["train", "--data", self.data, "--config", self.config, "--out", out / "run"],
            "evaluate": ["evaluate", "--run", self.run, "--data", self.data, "--split", self.split],
            "predict": ["predict", "--run", self.run, "--data", self.data, "--out", out / "s.zip"],
            "convert interactions": [
                "convert", "interactions", "--events", i / "events.csv", "--items", i / "items.csv",
                "--item-emb", i / "emb.parquet", "--out", out / "data",
            ],
            "convert microlens-50k": [
                "convert", "microlens-50k", "--pairs", i / "pairs.tsv", "--titles",
                i / "titles.csv", "--item-emb", i / "emb.parquet", "--out", out / "data",
            ],
        }  # fmt: skip
        progress = [] if command == "evaluate" else ["--no-progress"]
        return [str(a) for a in args[command]] + progress


# 4 users with 4-5 events each over items 10..80: enough for a train, valid and test row each
ITEMS = list(range(10, 90, 10))
LOG = {"u1": [10, 20, 30, 40], "u2": [50, 60, 70, 80, 10], "u3": [20, 40, 60], "u4": [30, 50, 70]}


def write_convert_inputs(root: Path) -> None:
    root.mkdir()
    events = [f"{u},{i},{t}\n" for u, items in LOG.items() for t, i in enumerate(items)]
    (root / "events.csv").write_text("user_id,item_id,timestamp\n" + "".join(events))
    titles = "".join(f"{i},title {i} #tag{i % 3}\n" for i in ITEMS)
    (root / "items.csv").write_text("item_id,title\n" + titles)
    (root / "titles.csv").write_text("item,title\n" + titles)
    pairs = [f"{n}\t{' '.join(map(str, items))}\n" for n, items in enumerate(LOG.values(), 1)]
    (root / "pairs.tsv").write_text("".join(pairs))
    emb = np.linspace(-1, 1, len(ITEMS) * 128, dtype=np.float32).reshape(len(ITEMS), 128)
    pq.write_table(pa.table({"item_id": ITEMS, "item_emb_d128": list(emb)}), root / "emb.parquet")


# -- ways to break a parquet file: each returns a function of the file's path

Break = Callable[[Path], object]


def rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def table_change(change: Callable[[pa.Table], pa.Table]) -> Break:
    return lambda path: rewrite(path, change)


def drop(column: str) -> Break:
    return table_change(lambda t: t.drop_columns([column]))


def cell(column: str, row: int, value: object) -> Break:
    """Set one cell, keeping the column's type."""

    def change(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        values[row] = value
        kind = table.schema.field(column).type
        return with_column(table, column, pa.array(values, type=kind))

    return table_change(change)


def cast(column: str, convert: Callable[[object], object]) -> Break:
    """Replace every value v of a column by convert(v), with the type pyarrow infers."""
    return table_change(
        lambda t: with_column(
            t, column, pa.array([convert(v) for v in t.column(column).to_pylist()])
        )
    )


def with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def as_floats(column: str, nan_row: int | None = None) -> Break:
    """Store an integer (or integer list) column as float64 with the same whole values; with
    ``nan_row``, that row's value becomes NaN."""

    def change(table: pa.Table) -> pa.Table:
        values = table.column(column).to_pylist()
        floats = [[float(x) for x in v] if isinstance(v, list) else float(v) for v in values]
        if nan_row is not None:
            floats[nan_row] = float("nan")
        kind = pa.list_(pa.float64()) if isinstance(values[0], list) else pa.float64()
        return with_column(table, column, pa.array(floats, type=kind))

    return table_change(change)


def int_labels(row: int, value: int) -> Break:
    """The label column as int64 (as many writers store it), ``value`` at ``row``."""

    def change(table: pa.Table) -> pa.Table:
        labels = [int(v) for v in table.column("label").to_pylist()]
        labels[row] = value
        return with_column(table, "label", pa.array(labels, type=pa.int64()))

    return table_change(change)


def float_item_feature(b: Bench) -> None:
    """Read likes_level as an item feature, stored as floats in item_info."""
    set_key(b, "data", "item_feature_cols", '["likes_level"]')
    as_floats("likes_level")(b.parquet(INFO))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_middle(path: Path) -> None:
    """Overwrite the middle third of the file (its data pages), keeping the footer intact."""
    raw = bytearray(path.read_bytes())
    third = len(raw) // 3
    raw[third : 2 * third] = (bytes(range(256)) * (third // 256 + 1))[:third]
    path.write_bytes(bytes(raw))


def make_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


# -- other inputs


def set_key(b: Bench, section: str, key: str, value: str) -> None:
    """Set ``key = value`` in ``[section]`` of the tiny config, replacing the key if present."""
    text = b.config.read_text()
    line = f"{key} = {value}"
    if re.search(rf"^{key} = ", text, flags=re.M):
        text = re.sub(rf"^{key} = .*$", line, text, count=1, flags=re.M)
    elif f"[{section}]" in text:
        text = text.replace(f"[{section}]", f"[{section}]\n{line}", 1)
    else:
        text += f"\n[{section}]\n{line}\n"
    b.config.write_text(text)


def deny_reading(b: Bench, target: Path, module: object, name: str) -> None:
    """Make ``module.name`` (the function that opens ``target``) fail on it with EACCES, as a
    chmod 000 file does for any user but root."""
    real = getattr(module, name)

    def opener(source: object, *args: object, **kwargs: object) -> object:
        if Path(str(source)) == target:
            raise PermissionError(13, "Permission denied", str(target))
        return real(source, *args, **kwargs)

    b.monkeypatch.setattr(module, name, opener)


def deny_config(b: Bench) -> None:
    real = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path == b.config:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    b.monkeypatch.setattr(Path, "read_bytes", read_bytes)


def other_schema(b: Bench) -> None:
    b.data = b.tmp / "other"
    synth.generate(b.data, replace(synth.PRESETS["tiny"], num_items=400), progress=False)


def low_cpu_level(b: Bench) -> None:
    """A context level far outside its vocabulary: one likes_level of 999 under
    configs/cpu.toml (vocabularies inferred)."""
    cell("likes_level", 7, 999)(b.parquet(TRAIN))
    b.config = CPU


# -- the cases


@dataclass(frozen=True)
class Case:
    name: str
    command: str  # train | evaluate | predict | convert interactions | convert microlens-50k
    setup: Callable[[Bench], object]
    expect: tuple[str, ...]


def data(name: str, split: str, breaks: Break, *expect: str, command: str = "train") -> Case:
    """A case that breaks one parquet file of the data set; its message must name the file."""
    return Case(name, command, lambda b: breaks(b.parquet(split)), (f"{split}.parquet", *expect))


def text(name: str, command: str, file: str, content: str | bytes, *expect: str) -> Case:
    """A case that rewrites one convert input; its message must name the file."""

    def setup(b: Bench) -> None:
        path = b.inputs / file
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    return Case(name, command, setup, (file, *expect))


def config(name: str, section: str, key: str, value: str, *expect: str) -> Case:
    """A case that sets one key of the tiny config; its message must name the file and key."""
    return Case(
        name,
        "train",
        lambda b: set_key(b, section, key, value),
        ("tiny.toml", f"{section}.{key}", *expect),
    )


EVENTS = "user_id,item_id,timestamp\nu1,10,1\n"
INTERACTIONS, MICROLENS = "convert interactions", "convert microlens-50k"

CASES = [
    # columns
    data("missing column", TRAIN, drop("likes_level"), "missing column 'likes_level'"),
    data(
        "renamed column",
        VALID,
        table_change(lambda t: t.rename_columns(["user_id", "history", *t.column_names[2:]])),
        "missing column 'item_seq'",
    ),
    data(
        "duplicated column",
        TRAIN,
        table_change(lambda t: t.append_column("label", t.column("label"))),
        "'label' appears 2 times",
    ),
    data("item_info without the embedding", INFO, drop("item_emb_d128"), "missing column"),
    # dtypes and ids
    data("string ids", TRAIN, cast("item_id", str), "'item_id' must hold integers"),
    data(
        "float ids with fractions", TRAIN, cast("item_id", lambda v: v + 0.5), "must hold integers"
    ),
    data("negative target id", TRAIN, cell("item_id", 2, -1), "'item_id' row 2"),
    data("negative history id", VALID, cell("item_seq", 4, [0] * 99 + [-5]), "'item_seq' row 4"),
    data("negative context level", TRAIN, cell("likes_level", 6, -3), "'likes_level' row 6"),
    data("null user id", TRAIN, cell("user_id", 11, None), "'user_id' row 11"),
    data("target id beyond item_info", TRAIN, cell("item_id", 9, 10_000), "'item_id' row 9"),
    data(
        "history id beyond item_info", VALID, cell("item_seq", 3, [300] * 100), "'item_seq' row 3"
    ),
    # embeddings
    data("NaN embedding", INFO, cell("item_emb_d128", 6, [np.nan] * 128), "'item_emb_d128' row 6"),
    data("inf embedding", INFO, cell("item_emb_d128", 8, [np.inf] * 128), "'item_emb_d128' row 8"),
    data(
        "embedding of 64 values",
        INFO,
        cell("item_emb_d128", 7, [0.5] * 64),
        "'item_emb_d128' row 7",
    ),
    data("integer embedding", INFO, cast("item_emb_d128", lambda v: [1] * 128), "must hold floats"),
    # lists
    data("ragged item_seq", TRAIN, cell("item_seq", 5, [1, 2, 3]), "'item_seq' row 5"),
    data(
        "item_seq shorter than train's",
        VALID,
        cast("item_seq", lambda v: v[-50:]),
        "'item_seq' row 0",
    ),
    data("null inside item_seq", TRAIN, cell("item_seq", 12, [None] * 100), "'item_seq' row 12"),
    data("ragged item_tags", INFO, cell("item_tags", 10, [1, 2]), "'item_tags' row 10"),
    data(
        "string tags",
        INFO,
        cast("item_tags", lambda v: ["a"] * 5),
        "'item_tags' must hold integers",
    ),
    # item_info as a table indexed by item id
    data(
        "item_id not the row index",
        INFO,
        table_change(lambda t: t.take(np.r_[0, 2, 1, 3 : t.num_rows])),
        "'item_id' row 1",
    ),
    data("duplicated item id", INFO, cell("item_id", 5, 4), "'item_id' row 5"),
    data(
        "non-zero padding tags",
        INFO,
        cell("item_tags", 0, [0, 0, 0, 0, 3]),
        "'item_tags' row 0",
        "padding",
    ),
    data(
        "non-zero padding embedding",
        INFO,
        cell("item_emb_d128", 0, [0.1] * 128),
        "'item_emb_d128' row 0",
        "padding",
    ),
    # labels
    data("label 2", TRAIN, cell("label", 8, 2.0), "'label' row 8"),
    data("label -1", VALID, cell("label", 1, -1.0), "'label' row 1"),
    data("NaN label", TRAIN, cell("label", 3, np.nan), "'label' row 3"),
    data("string labels", TRAIN, cast("label", str), "'label' must hold numbers"),
    # whole files
    data("empty train split", TRAIN, table_change(lambda t: t.slice(0, 0)), "0 rows"),
    data("empty valid split", VALID, table_change(lambda t: t.slice(0, 0)), "0 rows"),
    data("truncated file", TRAIN, truncate, "not a readable parquet file"),
    data("damaged data pages", INFO, corrupt_middle, "'item_emb_d128' rows 0..299", "damaged"),
    data(
        "not a parquet file", VALID, lambda p: p.write_text("a,b\n1,2\n"), "not a readable parquet"
    ),
    data("missing file", VALID, Path.unlink, "file not found"),
    data("a directory where a file should be", TRAIN, make_directory, "is a directory"),
    Case(
        "--data names a file",
        "train",
        lambda b: setattr(b, "data", b.parquet(TRAIN)),
        ("train.parquet", "not a directory"),
    ),
    data("unreadable file (chmod 000)", TRAIN, lambda p: p.chmod(0), "Permission denied"),
    Case(
        "unreadable file (open fails with EACCES)",
        "train",
        lambda b: deny_reading(b, b.parquet(INFO), pq, "ParquetFile"),
        ("item_info.parquet", "Permission denied"),
    ),
    # vocabularies
    data(
        "tag id 10^9, inferred vocabulary",
        INFO,
        cell("item_tags", 5, [0, 0, 0, 1, 10**9]),
        "'item_tags' row 5: tag id 1000000000",
        "61 distinct",
        "mmctr convert",
        "data.num_tags",
    ),
    Case(
        "likes_level 999, inferred vocabulary (cpu.toml)",
        "train",
        low_cpu_level,
        (
            "train.parquet",
            "'likes_level' row 7: value 999",
            "12 distinct",
            "data.context_vocab_sizes",
        ),
    ),
    data("tag id above int32", INFO, cell("item_tags", 4, [2**40] * 5), "'item_tags' row 4"),
    Case(
        "tag id beyond data.num_tags",
        "train",
        lambda b: set_key(b, "data", "num_tags", "30"),
        ("item_info.parquet", "'item_tags' row 2: tag id 43", "data.num_tags"),
    ),
    Case(
        "level beyond data.context_vocab_sizes",
        "train",
        lambda b: set_key(b, "data", "context_vocab_sizes", "[11, 4]"),
        ("train.parquet", "'views_level' row 0", "data.context_vocab_sizes"),
    ),
    # configs
    config("config: unknown key", "train", "bogus", "1", "unknown key"),
    config("config: wrong type", "train", "lr", '"fast"', "not a valid float"),
    config("config: negative lr", "train", "lr", "-0.001", "must be > 0"),
    config(
        "config: first_k > max_len", "model.target_transformer", "first_k", "40", "model.max_len"
    ),
    config("config: zero batch", "train", "batch_size", "0", "must be >= 1"),
    config(
        "config: unknown model kind",
        "model",
        "kind",
        '"xgboost"',
        "must be one of",
        "target_transformer",
    ),
    config("config: one size for two context columns", "data", "context_vocab_sizes", "[11]"),
    Case(
        "config: not TOML",
        "train",
        lambda b: b.config.write_text("[train\nlr = "),
        ("tiny.toml", "not valid TOML", "line 1"),
    ),
    Case(
        "config: not UTF-8",
        "train",
        lambda b: b.config.write_bytes(b"[train]\nlr = 1e-3 # caf\xe9\n"),
        ("tiny.toml", "line 2", "not UTF-8"),
    ),
    Case("config: unreadable (EACCES)", "train", deny_config, ("tiny.toml", "Permission denied")),
    # a trained model and other data
    Case(
        "predict with a model of another schema",
        "predict",
        other_schema,
        ("other", "num_items: model 300 vs data 400"),
    ),
    data(
        "item id beyond the model's items",
        TEST,
        cell("item_id", 13, 300),
        "'item_id' row 13",
        command="predict",
    ),
    data(
        "tag beyond the model's tags",
        INFO,
        cell("item_tags", 9, [0, 0, 0, 0, 60]),
        "'item_tags' row 9",
        "the trained model's tags",
        command="predict",
    ),
    data(
        "level beyond the model's vocabulary",
        VALID,
        cell("views_level", 14, 11),
        "'views_level' row 14",
        "the trained model's vocabulary",
        command="evaluate",
    ),
    data(
        "test without a context column",
        TEST,
        drop("views_level"),
        "missing column 'views_level'",
        command="predict",
    ),
    Case(
        "evaluate test without labels",
        "evaluate",
        lambda b: (setattr(b, "split", TEST), drop("label")(b.parquet(TEST))),
        ("test.parquet", "missing column 'label'"),
    ),
    # conversion inputs
    text(
        "convert: malformed CSV line",
        INTERACTIONS,
        "events.csv",
        EVENTS + "u1,20,2,9\n",
        "line 3",
        "4 fields where the header has 3",
    ),
    text(
        "convert: event item not in items",
        INTERACTIONS,
        "events.csv",
        EVENTS + "u1,999,2\n",
        "line 3",
        "'item_id'",
        "999",
    ),
    text(
        "convert: duplicated item in items",
        INTERACTIONS,
        "items.csv",
        "item_id,title\n10,a\n20,b\n10,c\n",
        "'item_id'",
        "line 2",
        "line 4",
    ),
    text(
        "convert: empty user id",
        INTERACTIONS,
        "events.csv",
        EVENTS + ",20,2\n",
        "line 3",
        "'user_id'",
    ),
    text(
        "convert: items not UTF-8",
        INTERACTIONS,
        "items.csv",
        b"item_id,title\n10,a\n20,caf\xe9\n",
        "line 3",
        "'title'",
        "not UTF-8",
    ),
    Case(
        "convert: NaN in the embedding file",
        INTERACTIONS,
        lambda b: cell("item_emb_d128", 2, [np.nan] * 128)(b.inputs / "emb.parquet"),
        ("emb.parquet", "'item_emb_d128' row 2"),
    ),
    Case(
        "convert: events file is a directory",
        INTERACTIONS,
        lambda b: make_directory(b.inputs / "events.csv"),
        ("events.csv", "is a directory"),
    ),
    text(
        "convert: unknown item in pairs",
        MICROLENS,
        "pairs.tsv",
        "1\t10 20 30\n2\t40 999 50\n",
        "line 2",
        "item 999 is not in titles.csv",
    ),
    text(
        "convert: pairs line without a tab",
        MICROLENS,
        "pairs.tsv",
        "1\t10 20\n2 40\n",
        "line 2",
        "<TAB>",
    ),
    text(
        "convert: non-integer item in pairs", MICROLENS, "pairs.tsv", "1\t10 3x\n", "line 1", "3x"
    ),
    text(
        "convert: pairs not UTF-8",
        MICROLENS,
        "pairs.tsv",
        b"1\t10 20\n\xff\t40\n",
        "line 2",
        "UTF-8",
    ),
    text(
        "convert: titles not UTF-8",
        MICROLENS,
        "titles.csv",
        b"item,title\n10,a\n20,b\n30,caf\xe9\n",
        "line 4",
        "'title'",
        "not UTF-8",
    ),
    # id and label types: ids are integers, never cast from floats (whole values included);
    # labels are integers or floats, each exactly 0 or 1
    data(
        "whole-valued float target ids",
        TRAIN,
        as_floats("item_id"),
        "'item_id' must hold integers, found double",
        "never cast",
    ),
    data(
        "NaN among float target ids", TRAIN, as_floats("item_id", 4), "'item_id' must hold integers"
    ),
    data("float history ids", VALID, as_floats("item_seq"), "'item_seq' must hold integers"),
    data("float user ids", TRAIN, as_floats("user_id"), "'user_id' must hold integers"),
    data(
        "float context level", TRAIN, as_floats("views_level"), "'views_level' must hold integers"
    ),
    data("float item_info ids", INFO, as_floats("item_id"), "'item_id' must hold integers"),
    data("float tag ids", INFO, as_floats("item_tags"), "'item_tags' must hold integers"),
    Case(
        "float item feature",
        "train",
        float_item_feature,
        ("item_info.parquet", "'likes_level' must hold integers"),
    ),
    data(
        "float ids in test",
        TEST,
        as_floats("item_id"),
        "'item_id' must hold integers",
        command="predict",
    ),
    data(
        "negative tag id", INFO, cell("item_tags", 3, [0, 0, 0, 4, -2]), "'item_tags' row 3", "-2"
    ),
    data("integer label 2", TRAIN, int_labels(5, 2), "'label' row 5: label 2 is not 0 or 1"),
    data("label 0.5", VALID, cell("label", 2, 0.5), "'label' row 2: label 0.5 is not 0 or 1"),
    data(
        "boolean labels",
        TRAIN,
        cast("label", lambda v: v == 1.0),
        "'label' must hold numbers, found bool",
    ),
    Case(
        "convert: float ids in the embedding file",
        INTERACTIONS,
        lambda b: as_floats("item_id")(b.inputs / "emb.parquet"),
        ("emb.parquet", "'item_id'", "must hold integer or string ids"),
    ),
]
