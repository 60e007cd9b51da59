"""Tests of the synthetic MicroLens-style data generator."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mmctr.prepare import synth
from mmctr.prepare.synth import rows, world

FILES = ("train.parquet", "valid.parquet", "test.parquet", "item_info.parquet")
TINY = synth.PRESETS["tiny"]
ROWS = {"train": TINY.num_train, "valid": TINY.num_valid, "test": TINY.num_test}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("tiny")
    return out, synth.generate(out, "tiny", seed=0, progress=False)


def _fixed_lists(col: pa.ChunkedArray, width: int) -> np.ndarray[Any, Any]:
    """A list column as a 2-d array, after checking every row has ``width`` entries."""
    assert pc.all(pc.equal(pc.list_value_length(col), width)).as_py()
    return col.combine_chunks().flatten().to_numpy().reshape(-1, width)


def _is_list_of(t: pa.DataType, value: pa.DataType) -> bool:
    return pa.types.is_list(t) and t.value_type == value


def _rows(out: Path, split: str) -> dict[str, np.ndarray[Any, Any]]:
    t = pq.read_table(out / f"{split}.parquet")
    cols = {c: t.column(c).to_numpy() for c in t.column_names if c != "item_seq"}
    return {**cols, "item_seq": _fixed_lists(t.column("item_seq"), TINY.seq_len)}


def _topics(seed: int) -> np.ndarray[Any, Any]:
    # The latent topics are not written out; rebuild them the way generate() seeds them.
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)]
    made, _ = world.make_world(TINY, rngs[0], rngs[1])
    return made.topic


def test_files_and_schema(tiny: tuple[Path, dict[str, Any]]) -> None:
    out, meta = tiny
    for name in (*FILES, "dataset.json"):
        assert (out / name).is_file()
    assert not list(out.glob(".synth-tmp-*"))
    for split, n in ROWS.items():
        schema = pq.read_schema(out / f"{split}.parquet")
        assert schema.names == [
            "user_id",
            "item_seq",
            "item_id",
            "likes_level",
            "views_level",
            "label",
        ]
        for col in ("user_id", "item_id", "likes_level", "views_level"):
            assert schema.field(col).type == pa.int64()
        assert schema.field("label").type == pa.float64()
        assert _is_list_of(schema.field("item_seq").type, pa.int64())
        assert pq.read_metadata(out / f"{split}.parquet").num_rows == n
    schema = pq.read_schema(out / "item_info.parquet")
    assert schema.names == ["item_id", "item_tags", "item_emb_d128", "likes_level", "views_level"]
    assert schema.field("item_id").type == pa.int64()
    assert _is_list_of(schema.field("item_tags").type, pa.int64())
    assert _is_list_of(schema.field("item_emb_d128").type, pa.float32())
    assert json.loads((out / "dataset.json").read_text()) == meta
    assert meta["counts"]["rows"] == ROWS and meta["counts"]["items"] == TINY.num_items


def test_item_info(tiny: tuple[Path, dict[str, Any]]) -> None:
    t = pq.read_table(tiny[0] / "item_info.parquet")
    assert t.num_rows == TINY.num_items
    assert (t.column("item_id").to_numpy() == np.arange(TINY.num_items)).all()
    tags = _fixed_lists(t.column("item_tags"), 5)
    emb = _fixed_lists(t.column("item_emb_d128"), 128)
    assert emb.dtype == np.float32
    assert not tags[0].any() and not emb[0].any()
    assert tags.min() == 0 and tags.max() == TINY.num_tags - 1
    assert (np.abs(emb[1:]).sum(axis=1) > 0).all()
    # Left padding: once a real tag appears, no zero follows.
    assert not ((tags[:, :-1] > 0) & (tags[:, 1:] == 0)).any()
    no_tags = (tags[1:] == 0).all(axis=1).mean()
    assert 0.0 < no_tags < 0.3


def test_rows(tiny: tuple[Path, dict[str, Any]]) -> None:
    out, meta = tiny
    for split in ROWS:
        r = _rows(out, split)
        seq, real = r["item_seq"], r["item_seq"] > 0
        assert ((r["user_id"] >= 0) & (r["user_id"] < TINY.num_users)).all()
        assert ((r["item_id"] >= 1) & (r["item_id"] < TINY.num_items)).all()
        assert ((seq >= 0) & (seq < TINY.num_items)).all()
        for col in ("likes_level", "views_level"):
            assert ((r[col] >= 0) & (r[col] <= 10)).all()
        assert set(np.unique(r["label"])) == {0.0, 1.0}
        assert 0.18 <= r["label"].mean() <= 0.32
        assert meta["positive_rate"][split] == pytest.approx(r["label"].mean(), abs=1e-5)
        assert real.sum(axis=1).min() >= 3 and real[:, -1].all()
        assert not (real[:, :-1] & ~real[:, 1:]).any()  # zeros only before the first real item
        # Several rows per user, so per-user AUC is meaningful.
        assert len(r["user_id"]) / len(np.unique(r["user_id"])) >= 5
    hist = meta["history_length"]
    assert hist["min"] >= 3 and 5 <= hist["median"] <= 7 and 6 <= hist["mean"] <= 10


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    synth.generate(tmp_path / "a", "tiny", seed=3, progress=False)
    synth.generate(tmp_path / "b", "tiny", seed=3, progress=False)
    synth.generate(tmp_path / "c", "tiny", seed=4, progress=False)
    for name in (*FILES, "dataset.json"):
        a, b, c = ((tmp_path / d / name).read_bytes() for d in "abc")
        assert a == b
        if name != "dataset.json":
            assert a != c


def test_history_signal(tiny: tuple[Path, dict[str, Any]]) -> None:
    topic = _topics(0)
    r = _rows(tiny[0], "train")
    last3 = topic[r["item_seq"][:, -3:]]  # histories have >= 3 items, so no padding here
    mode = np.array([np.bincount(row).argmax() for row in last3])
    match = mode == topic[r["item_id"]]
    assert 0.1 < match.mean() < 0.6
    assert r["label"][match].mean() > r["label"][~match].mean() + 0.2


def test_context_signal(tiny: tuple[Path, dict[str, Any]]) -> None:
    r = _rows(tiny[0], "train")
    for col in ("likes_level", "views_level"):
        hi = r[col] >= 6
        assert r["label"][hi].mean() > r["label"][~hi].mean()


def test_embedding_signal(tiny: tuple[Path, dict[str, Any]]) -> None:
    topic = _topics(0)[1:]
    t = pq.read_table(tiny[0] / "item_info.parquet")
    emb = _fixed_lists(t.column("item_emb_d128"), 128)[1:].astype(np.float64)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cos = emb @ emb.T
    same = topic[:, None] == topic[None, :]
    off_diag = ~np.eye(len(topic), dtype=bool)
    within, across = cos[same & off_diag].mean(), cos[~same].mean()
    assert within > across + 0.2
    assert within < 0.9  # noisy, not a one-hot code of the topic


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "item_info.parquet").write_bytes(b"old")
    with pytest.raises(FileExistsError, match=r"item_info\.parquet.*overwrite"):
        synth.generate(tmp_path, "tiny", progress=False)
    assert (tmp_path / "item_info.parquet").read_bytes() == b"old"
    assert not (tmp_path / "train.parquet").exists()
    synth.generate(tmp_path, "tiny", overwrite=True, progress=False)
    assert pq.read_metadata(tmp_path / "item_info.parquet").num_rows == TINY.num_items


def test_unknown_preset(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'huge'.*tiny.*demo.*microlens-1m"):
        synth.generate(tmp_path, "huge", progress=False)


def test_custom_preset(tmp_path: Path) -> None:
    preset = dataclasses.replace(TINY, seq_len=20, num_train=700, chunk_rows=256)
    meta = synth.generate(tmp_path, preset, progress=False)
    t = pq.read_table(tmp_path / "train.parquet")
    assert t.num_rows == 700 and meta["preset"] == "custom"
    assert _fixed_lists(t.column("item_seq"), 20).shape == (700, 20)
    assert pq.ParquetFile(tmp_path / "train.parquet").metadata.num_row_groups == 3
    assert meta["history_length"]["max"] <= 20


@pytest.mark.parametrize("existing", [False, True])
def test_failure_leaves_no_partial_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    if existing:
        synth.generate(tmp_path, "tiny", seed=1, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    real, calls = rows.build_chunk, []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # train is done, valid fails half way through the data set
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(rows, "build_chunk", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        synth.generate(tmp_path, "tiny", seed=2, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert not list(tmp_path.glob(".synth-tmp-*"))
