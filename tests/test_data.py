"""Reading the challenge layout: arrays out, and a clear message for every kind of bad input."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr.data import DataConfig, iter_batches, load_dataset
from mmctr.errors import DataError

CFG = DataConfig()


def rewrite(path: Path, change: Callable[[pa.Table], pa.Table]) -> None:
    pq.write_table(change(pq.read_table(path)), path)


def set_column(table: pa.Table, name: str, values: list[object] | pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def edit_row(table: pa.Table, name: str, row: int, value: object) -> pa.Table:
    values = table.column(name).to_pylist()
    values[row] = value
    return set_column(table, name, pa.array(values, type=table.schema.field(name).type))


def test_loads_contiguous_arrays(tiny_data: Path) -> None:
    data = load_dataset(tiny_data, CFG, ("train", "valid", "test"))
    train = data["train"]
    assert train.history.dtype == np.int32 and train.history.flags.c_contiguous
    assert train.history.shape == (3000, 100) and train.context.shape == (3000, 2)
    assert data.items.emb.dtype == np.float32 and data.items.tags.shape[1] == 5
    assert data.schema.num_items == data.items.num_items
    assert not data.items.emb[0].any() and not data.items.tags[0].any()
    table = pq.read_table(tiny_data / "train.parquet")
    assert np.array_equal(train.target, table.column("item_id").to_numpy())
    assert np.array_equal(train.history[17], table.column("item_seq")[17].as_py())
    assert data.schema.context_vocab_sizes == (11, 11)


def test_batches_cover_every_row_once(tiny_data: Path) -> None:
    split = load_dataset(tiny_data, CFG, ("valid",))["valid"]
    seen = []
    for batch in iter_batches(split, 128, shuffle=True, seed=1):
        assert batch.history.shape[1] == split.history.shape[1]  # the whole stored history
        seen.append(batch.target.numpy())
    assert sorted(np.concatenate(seen).tolist()) == sorted(split.target.tolist())


def test_take_keeps_rows_aligned_across_arrays(tiny_data: Path) -> None:
    split = load_dataset(tiny_data, DataConfig())["train"]
    rows = np.array([5, 0, 7])
    part = split.take(rows)
    assert len(part) == 3 and part.name == split.name
    assert (part.target == split.target[rows]).all() and (part.users == split.users[rows]).all()
    assert (part.history == split.history[rows]).all()
    assert (part.context == split.context[rows]).all()
    assert part.labels is not None and split.labels is not None
    assert (part.labels == split.labels[rows]).all()
    assert len(split.take(slice(0, 4))) == 4
    assert len(split.take(split.target == split.target[0])) >= 1


def test_schema_fingerprint_is_stable_and_sensitive(tiny_data: Path) -> None:
    a = load_dataset(tiny_data, CFG, ("valid",)).schema
    b = load_dataset(tiny_data, CFG, ("test",)).schema
    assert a.fingerprint == b.fingerprint
    c = load_dataset(tiny_data, DataConfig(context_vocab_sizes=(12, 11)), ("valid",)).schema
    assert c.fingerprint != a.fingerprint


CASES: list[tuple[str, str, Callable[[pa.Table], pa.Table], str]] = [
    (
        "train",
        "missing column",
        lambda t: t.drop_columns(["likes_level"]),
        r"train.parquet: missing column 'likes_level'",
    ),
    (
        "train",
        "wrong dtype",
        lambda t: set_column(
            t, "item_id", pa.array([str(v) for v in t.column("item_id").to_pylist()])
        ),
        r"train.parquet: column 'item_id' must hold integers",
    ),
    (
        "train",
        "scalar expected list",
        lambda t: set_column(t, "item_seq", t.column("item_id")),
        r"train.parquet: column 'item_seq' must be a list",
    ),
    (
        "train",
        "short list",
        lambda t: edit_row(t, "item_seq", 5, [1, 2, 3]),
        r"train.parquet: column 'item_seq' row 5: list has 3 values, expected 100",
    ),
    (
        "train",
        "item beyond item_info",
        lambda t: edit_row(t, "item_id", 9, 10_000),
        r"train.parquet: column 'item_id' row 9: item id 10000",
    ),
    (
        "valid",
        "history item beyond item_info",
        lambda t: edit_row(t, "item_seq", 4, [0] * 99 + [10_000]),
        r"valid.parquet: column 'item_seq' row 4: item id 10000 is out of range",
    ),
    (
        "train",
        "negative id",
        lambda t: edit_row(t, "item_id", 2, -1),
        r"row 2: item id -1 is out of range",
    ),
    (
        "train",
        "null",
        lambda t: edit_row(t, "views_level", 11, None),
        r"column 'views_level' row 11: value is null",
    ),
    (
        "train",
        "NaN label",
        lambda t: edit_row(t, "label", 3, float("nan")),
        r"column 'label' row 3: value nan is not finite",
    ),
    (
        "train",
        "label outside 0/1",
        lambda t: edit_row(t, "label", 8, 2.0),
        r"column 'label' row 8: label 2.0 is not 0 or 1",
    ),
    ("train", "empty file", lambda t: t.slice(0, 0), r"train.parquet: file is empty"),
    (
        "item_info",
        "NaN embedding",
        lambda t: edit_row(t, "item_emb_d128", 6, [float("inf")] * 128),
        r"item_info.parquet: column 'item_emb_d128' row 6: value inf is not finite",
    ),
    (
        "item_info",
        "row index is not item_id",
        lambda t: edit_row(t, "item_id", 4, 40),
        r"item_info.parquet: column 'item_id' row 4: item_id 40 differs from its row index 4",
    ),
    (
        "item_info",
        "embedding of the wrong width",
        lambda t: edit_row(t, "item_emb_d128", 7, [0.5] * 64),
        r"column 'item_emb_d128' row 7: list has 64 values, expected 128",
    ),
]


@pytest.mark.parametrize(("split", "what", "change", "message"), CASES, ids=[c[1] for c in CASES])
def test_bad_input_is_named(
    tiny_data: Path, split: str, what: str, change: Callable[[pa.Table], pa.Table], message: str
) -> None:
    rewrite(tiny_data / f"{split}.parquet", change)
    with pytest.raises(DataError, match=message):
        load_dataset(tiny_data, CFG, ("train", "valid"))


def test_vocabularies_from_config_are_enforced(tiny_data: Path) -> None:
    with pytest.raises(DataError, match=r"column 'likes_level' row \d+: value \d+ is out of range"):
        load_dataset(tiny_data, DataConfig(context_vocab_sizes=(3, 11)), ("train",))
    with pytest.raises(DataError, match=r"item_info.parquet: column 'item_tags' row \d+: tag id"):
        load_dataset(tiny_data, DataConfig(num_tags=5), ("train",))


def test_missing_files_and_directories(tiny_data: Path) -> None:
    with pytest.raises(DataError, match="data directory not found"):
        load_dataset(tiny_data / "nope", CFG)
    (tiny_data / "valid.parquet").unlink()
    with pytest.raises(DataError, match=r"valid.parquet: file not found"):
        load_dataset(tiny_data, CFG, ("train", "valid"))
    (tiny_data / "test.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_dataset(tiny_data, CFG, ("test",))


def test_other_context_columns_or_none(tiny_data: Path) -> None:
    no_context = load_dataset(tiny_data, DataConfig(context_cols=()), ("valid",))
    assert no_context["valid"].context.shape == (500, 0)
    one = load_dataset(tiny_data, DataConfig(context_cols=("views_level",)), ("valid",))
    assert one.schema.context_cols == ("views_level",)


def test_test_split_without_labels(tiny_data: Path) -> None:
    rewrite(tiny_data / "test.parquet", lambda t: t.drop_columns(["label"]))
    data = load_dataset(tiny_data, CFG, ("test",), require_labels=False)
    assert data["test"].labels is None
    with pytest.raises(DataError, match="missing column 'label'"):
        load_dataset(tiny_data, CFG, ("test",))


def test_an_inferred_vocabulary_must_be_plausibly_dense(tiny_data: Path) -> None:
    # one stray tag id decided the table size: 10^9 + 1 rows for 61 distinct tags
    rewrite(
        tiny_data / "item_info.parquet", lambda t: edit_row(t, "item_tags", 5, [0, 0, 0, 1, 10**9])
    )
    with pytest.raises(DataError) as caught:
        load_dataset(tiny_data, CFG, ("train",))
    message = str(caught.value)
    for words in ("item_info.parquet", "'item_tags' row 5", "1000000000", "61 distinct"):
        assert words in message
    assert "mmctr convert" in message and "data.num_tags" in message
    # the suggested fix: a configured size makes the stray id an error naming its row
    with pytest.raises(DataError, match=r"'item_tags' row 5: tag id 1000000000 is out of range"):
        load_dataset(tiny_data, DataConfig(num_tags=60), ("train",))


def test_the_sparsity_rule_spares_small_and_quarter_full_vocabularies(tiny_data: Path) -> None:
    # tiny's levels use 0..10; one level of 255 makes 256 entries: small enough to keep
    rewrite(tiny_data / "valid.parquet", lambda t: edit_row(t, "likes_level", 0, 255))
    assert load_dataset(tiny_data, CFG, ()).schema.context_vocab_sizes == (256, 11)
    # 257 entries with 12 in use: refused, naming the file of the largest value
    rewrite(tiny_data / "valid.parquet", lambda t: edit_row(t, "likes_level", 0, 256))
    with pytest.raises(DataError, match=r"valid.parquet: column 'likes_level' row 0: value 256"):
        load_dataset(tiny_data, CFG, ())
    rewrite(tiny_data / "valid.parquet", lambda t: edit_row(t, "likes_level", 0, 1))
    # item i's one tag is 4i: 300 ids in use (padding included) of 1,197, just over a quarter
    spread = [[0, 0, 0, 0, 4 * i] for i in range(300)]
    rewrite(tiny_data / "item_info.parquet", lambda t: set_column(t, "item_tags", pa.array(spread)))
    assert load_dataset(tiny_data, CFG, ()).schema.num_tags == 1197
    # item 1's tag moved to 1,200: still 300 in use, of 1,201, just under a quarter
    rewrite(
        tiny_data / "item_info.parquet", lambda t: edit_row(t, "item_tags", 1, [0] * 4 + [1200])
    )
    with pytest.raises(DataError, match=r"'item_tags' row 1: tag id 1200 .* only 300 distinct"):
        load_dataset(tiny_data, CFG, ())
