"""The converter: interaction log + items -> challenge layout, and its messages on bad input."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr.cli import convert as cli_convert
from mmctr.data import DataConfig, load_dataset
from mmctr.errors import ConfigError, DataError
from mmctr.logs import to_terminal
from mmctr.prepare.convert.core import convert
from mmctr.prepare.convert.io import load_inputs
from mmctr.prepare.convert.levels import decile_levels, likes_levels, views_levels
from mmctr.prepare.convert.microlens import convert_microlens
from mmctr.prepare.convert.options import ConvertOptions
from mmctr.prepare.convert.tags import build_vocab, parse_hashtags, tag_matrix

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "microlens-50k"

# (user, item, timestamp) in shuffled file order; carol has 2 events and must be skipped
EVENTS = [
    ("alice", 30, 3),
    ("bob", 60, 1),
    ("alice", 10, 1),
    ("carol", 100, 1),
    ("dave", 110, 5),
    ("alice", 50, 5),
    ("bob", 90, 4),
    ("alice", 20, 2),
    ("erin", 20, 1),
    ("dave", 120, 6),
    ("carol", 110, 2),
    ("bob", 70, 2),
    ("erin", 30, 2),
    ("alice", 40, 4),
    ("dave", 10, 7),
    ("bob", 80, 3),
    ("erin", 60, 3),
    ("erin", 70, 4),
]
TITLES = {
    10: "cat video # Cute Cats # funny",
    20: "dog # funny #dogs",
    30: "no tags here",
    40: "#cute cats, #Dogs",
    50: "# funny # rare one",
    60: "",
    70: "#funny",
}
ITEM_IDS = list(range(10, 150, 10))  # 140 never appears in events


def write_inputs(root: Path, events: list[tuple[Any, ...]] = EVENTS) -> tuple[Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    ev = root / "events.csv"
    ev.write_text("user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in events))
    it = root / "items.csv"
    rows = "".join(f'{i},"{TITLES.get(i, "")}"\n' for i in ITEM_IDS)
    it.write_text("item_id,title\n" + rows)
    return ev, it


def emb_file(path: Path, ids: list[int], width: int = 128) -> Path:
    emb = np.array([[i / 1000.0] * width for i in ids], dtype=np.float32)
    pq.write_table(pa.table({"item_id": ids, "item_emb_d128": list(emb)}), path)
    return path


def run(root: Path, name: str = "out", **kw: Any) -> tuple[Path, dict[str, Any]]:
    ev, it = write_inputs(root / "in", kw.pop("events", EVENTS))
    emb = emb_file(root / "emb.parquet", ITEM_IDS)
    opts = ConvertOptions(**{"item_emb": emb, **kw})
    out = root / name
    meta = convert(*load_inputs(ev, it), out, opts, progress=False)
    return out, meta


def rows_of(out: Path, split: str) -> list[dict[str, Any]]:
    """Rows with ids mapped back to original ids."""
    imap = pq.read_table(out / "item_map.parquet").to_pydict()
    umap = pq.read_table(out / "user_map.parquet").to_pydict()
    items = dict(zip(imap["item_id"], imap["original_item_id"], strict=True))
    users = dict(zip(umap["user_id"], umap["original_user_id"], strict=True))
    rows = pq.read_table(out / f"{split}.parquet").to_pylist()
    for r in rows:
        r["user"] = users[r["user_id"]]
        r["item"] = items[r["item_id"]]
        r["hist"] = [items[i] for i in r["item_seq"] if i]
    return rows


def test_split_histories_and_id_maps(tmp_path: Path) -> None:
    out, meta = run(tmp_path, max_len=3)
    pos = {s: [r for r in rows_of(out, s) if r["label"] == 1] for s in ("train", "valid", "test")}
    by = {s: {(r["user"], r["item"]): r["hist"] for r in pos[s]} for s in pos}
    assert by["test"] == {
        ("alice", 50): [20, 30, 40],  # max_len 3: the 3 most recent, the valid item last
        ("bob", 90): [60, 70, 80],
        ("dave", 10): [110, 120],
        ("erin", 70): [20, 30, 60],
    }
    assert by["valid"] == {
        ("alice", 40): [10, 20, 30],
        ("bob", 80): [60, 70],
        ("dave", 120): [110],
        ("erin", 60): [20, 30],
    }
    assert by["train"] == {
        ("alice", 20): [10],
        ("alice", 30): [10, 20],
        ("bob", 70): [60],
        ("erin", 30): [20],
    }
    test = pq.read_table(out / "test.parquet").to_pydict()
    dave = test["item_seq"][test["user_id"].index(3)]  # user ids follow original-id order
    assert dave == [0, 11, 12]  # left-padded, most recent last: items 110, 120 are ids 11, 12
    # ids: items 1..N in original-id order, users in original-id order, carol skipped
    imap = pq.read_table(out / "item_map.parquet").to_pydict()
    assert imap == {"item_id": list(range(1, 15)), "original_item_id": ITEM_IDS}
    umap = pq.read_table(out / "user_map.parquet").to_pydict()
    assert umap["original_user_id"] == ["alice", "bob", "dave", "erin"]
    skip = meta["skipped"]["users_with_fewer_than_3_interactions"]
    assert (skip["users"], skip["interactions"]) == (1, 2)
    assert meta["counts"]["rows"] == {"train": 16, "valid": 16, "test": 16}
    data = load_dataset(out, DataConfig(), ("train", "valid", "test"))
    assert data.schema.num_items == 15 and data.schema.seq_len == 3
    assert data.items.emb[imap["item_id"][0], 0] == pytest.approx(0.010)  # item 10 -> row 1


def test_negatives_rate_and_groups(tmp_path: Path) -> None:
    out, _ = run(tmp_path)
    log: dict[str, set[int]] = {}
    for u, i, _t in EVENTS:
        log.setdefault(u, set()).add(i)
    for split in ("train", "valid", "test"):
        rows = rows_of(out, split)
        assert sum(r["label"] for r in rows) / len(rows) == 0.25
        for k in range(0, len(rows), 4):
            group = rows[k : k + 4]
            assert sum(r["label"] for r in group) == 1
            assert len({tuple(r["item_seq"]) for r in group}) == 1
            assert len({r["item"] for r in group}) == 4  # distinct negatives
            for r in group:
                if r["label"] == 0:
                    assert r["item"] not in log[r["user"]] and r["item"] != 140


def test_deterministic_with_seed(tmp_path: Path) -> None:
    a, _ = run(tmp_path, "a", seed=5)
    b, _ = run(tmp_path, "b", seed=5)
    c, _ = run(tmp_path, "c", seed=6)
    for split in ("train", "valid", "test"):
        ta, tb = (pq.read_table(d / f"{split}.parquet") for d in (a, b))
        assert ta.equals(tb)
    assert not pq.read_table(a / "train.parquet").equals(pq.read_table(c / "train.parquet"))


def test_popularity_sampling_draws_train_items_only(tmp_path: Path) -> None:
    out, meta = run(tmp_path, sampling="popularity", negatives=2)
    train_items = {10, 20, 30, 60, 70, 110}  # train-period items of the kept users
    for split in ("train", "valid", "test"):
        rows = rows_of(out, split)
        assert sum(r["label"] for r in rows) / len(rows) == pytest.approx(1 / 3)
        assert {r["item"] for r in rows if r["label"] == 0} <= train_items
    assert meta["negatives"]["pool_size"] == len(train_items)


def test_levels_hand_checked_and_train_only(tmp_path: Path) -> None:
    values = np.array([0.0, 1.0, 1.0, 2.0, 5.0])
    present = np.array([False, True, True, True, True])
    # 4 present values: the two 1s have none below -> 1; 2 has 2 below -> 1 + 20 // 4 = 6
    assert decile_levels(values, present).tolist() == [0, 1, 1, 6, 8]
    users, items = np.array([1, 1, 2, 2, 2]), np.array([1, 2, 1, 1, 3])
    views, counts = views_levels(items, 5)
    assert counts.tolist() == [0, 3, 1, 1, 0] and views.tolist() == [0, 7, 1, 1, 0]
    # activity: user 1 -> 2, user 2 -> 3; item 1 clicked by both (2.5), item 2 (2), item 3 (3)
    assert likes_levels(users, items, 3, 5).tolist() == [0, 4, 1, 7, 0]

    def level_map(out: Path) -> dict[int, tuple[int, int]]:
        found = {}
        for split in ("train", "valid", "test"):
            for r in rows_of(out, split):
                found[r["item"]] = (r["likes_level"], r["views_level"])
        return found

    base, _ = run(tmp_path, "base")
    # a different test-period item for alice must leave every other item's levels unchanged
    events = [(u, 130 if (u, i) == ("alice", 50) else i, t) for u, i, t in EVENTS]
    moved, _ = run(tmp_path, "moved", events=events)
    a, b = level_map(base), level_map(moved)
    common = set(a) & set(b)
    assert len(common) >= 8 and all(a[i] == b[i] for i in common)
    assert a.get(50, (0, 0)) == (0, 0) and b.get(130, (0, 0)) == (0, 0)  # test-only items
    assert a[40] == (0, 0)  # alice's valid item: never in any train period


def test_hashtags_and_tag_vocab(tmp_path: Path) -> None:
    assert parse_hashtags("Fun # Two  Yuan # comic, #comic") == ["two yuan", "comic"]
    assert parse_hashtags("no tags") == [] and parse_hashtags(None) == []
    vocab = build_vocab([["a", "b"], ["b", "c"], ["b", "a"], ["d"]], min_count=2)
    assert vocab.tags == ["b", "a"] and vocab.num_tags == 3 and vocab.num_candidates == 4
    matrix, cut = tag_matrix([["a", "b", "x"], ["d"], ["a"]], vocab, 1)
    assert matrix.tolist() == [[1], [0], [2]] and cut == 1  # most frequent kept
    out, meta = run(tmp_path)
    tags = pq.read_table(out / "tag_vocab.parquet").to_pydict()
    # funny: items 10, 20, 50, 70; cute cats: 10, 40; dogs: 20, 40; "rare one" only once
    assert tags["tag"] == ["funny", "cute cats", "dogs"] and tags["num_items"] == [4, 2, 2]
    info = pq.read_table(out / "item_info.parquet").column("item_tags").to_pylist()
    assert info[0] == [0] * 5 and info[1] == [0, 0, 0, 1, 2]  # item 10: funny, cute cats
    assert meta["tags"]["source"] == "#hashtags of the titles"


def test_tags_column_as_list_or_delimited(tmp_path: Path) -> None:
    ev, _ = write_inputs(tmp_path)
    ids = ITEM_IDS
    tags = [["x", "Y"] if i < 50 else ["x"] for i in ids]
    pq.write_table(pa.table({"item_id": ids, "tags": tags}), tmp_path / "items.parquet")
    _, items = load_inputs(ev, tmp_path / "items.parquet")
    assert items.tags is not None and items.tags[0] == ["x", "Y"]
    (tmp_path / "items.tsv").write_text("item_id\ttags\n" + "".join(f"{i}\tx|Y\n" for i in ids))
    _, items = load_inputs(ev, tmp_path / "items.tsv")
    assert items.tags is not None and items.tags[0] == ["x", "Y"]
    opts = ConvertOptions(item_emb=emb_file(tmp_path / "e.parquet", ids))
    meta = convert(*load_inputs(ev, tmp_path / "items.parquet"), tmp_path / "o", opts)
    assert meta["tags"]["top"] == ["x", "y"] and meta["tags"]["source"].startswith("tags column")


def test_iso_timestamps_order_events_and_image_paths(tmp_path: Path) -> None:
    ev = tmp_path / "events.csv"
    stamps = ["2024-03-01T10:00:00", "2024-01-01T09:00:00", "2024-02-01T08:00:00"]
    ev.write_text(
        "user_id,item_id,timestamp\n"
        + "".join(f"u,{i},{t}\n" for i, t in zip("abc", stamps, strict=True))
    )
    it = tmp_path / "items.csv"
    it.write_text("item_id,image_path\na,img/a.jpg\nb,\nc,/abs/c.jpg\n")
    events, items = load_inputs(ev, it)
    assert items.image_paths == [str((tmp_path / "img" / "a.jpg").resolve()), None, "/abs/c.jpg"]
    order = np.argsort(events.order)
    assert [events.items[i] for i in order] == ["b", "c", "a"]


def fake_embedder(calls: list[dict[str, Any]]) -> types.ModuleType:
    class Pca:
        def save(self, path: Path) -> None:
            np.savez(path, mean=np.zeros(3))

    def embed_items(ids: np.ndarray, texts: Any, image_paths: Any, **kw: Any) -> Any:
        calls.append({"ids": list(ids), "texts": texts, "images": image_paths, **kw})
        return np.repeat(np.asarray(ids, np.float32)[:, None] / 1000.0, kw["dim"], 1), Pca()

    module = types.ModuleType("mmctr.prepare.embed")
    module.embed_items = embed_items  # type: ignore[attr-defined]
    return module


def test_computed_embedding_and_missing_encoders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ev, it = write_inputs(tmp_path)
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "mmctr.prepare.embed", fake_embedder(calls))
    meta = convert(*load_inputs(ev, it), tmp_path / "o", ConvertOptions(whiten=True))
    assert calls[0]["ids"] == ITEM_IDS and calls[0]["texts"][0] == TITLES[10]
    assert calls[0]["whiten"] is True and calls[0]["images"] is None
    assert (tmp_path / "o" / "item_emb.pca.npz").is_file()
    emb = load_dataset(tmp_path / "o", DataConfig(), ()).items.emb
    assert emb[14, 0] == pytest.approx(0.140) and meta["embedding"]["pca_file"]
    monkeypatch.setitem(sys.modules, "mmctr.prepare.embed", None)  # import now raises ImportError
    with pytest.raises(DataError, match=r"--item-emb.*mmctr\[embed\]"):
        convert(*load_inputs(ev, it), tmp_path / "o2", ConvertOptions())
    assert not (tmp_path / "o2").exists()


def test_item_emb_file_checks(tmp_path: Path) -> None:
    ev, it = write_inputs(tmp_path)
    inputs = load_inputs(ev, it)
    meta = convert(
        *inputs, tmp_path / "a", ConvertOptions(item_emb=emb_file(tmp_path / "p.pq", [10, 20, 999]))
    )
    assert meta["embedding"]["items_missing_zero_vector"] == 12
    assert meta["embedding"]["file_rows_not_in_items"] == 1
    bad = emb_file(tmp_path / "w.parquet", ITEM_IDS, width=64)
    with pytest.raises(DataError, match="has 64 values; expected 128"):
        convert(*inputs, tmp_path / "b", ConvertOptions(item_emb=bad))
    dup = emb_file(tmp_path / "d.parquet", [10, 10])
    with pytest.raises(DataError, match="item 10 has more than one embedding row"):
        convert(*inputs, tmp_path / "c", ConvertOptions(item_emb=dup))
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a", "d.parquet", "events.csv", "items.csv", "p.pq", "w.parquet"]
    )  # no temporary folder left behind


@pytest.mark.parametrize(
    ("events", "items", "message"),
    [
        (
            "user_id,item_id,ts\nu,10,1\n",
            None,
            r"events.csv: missing column 'timestamp'.*--order-col",
        ),
        (
            "user_id,item_id,timestamp\nu,999,1\nu,10,2\n",
            None,
            r"line 2: column 'item_id': item 999 is not in items.csv \(1 events",
        ),
        (
            "user_id,item_id,timestamp\nu,10,1\n,20,2\n",
            None,
            r"events.csv line 3: column 'user_id' holds an empty id",
        ),
        (
            "user_id,item_id,timestamp\nu,10,x\n",
            None,
            r"order column 'timestamp' must hold numbers or timestamps",
        ),
        ("", None, r"events.csv: file is empty"),
        ("user_id,item_id,timestamp\n", None, r"events.csv: file has no data rows"),
        (
            None,
            "item_id,title\n10,a\n20,b\n10,c\n",
            r"id 10 appears more than once \(items.csv line 2 and items.csv line 4",
        ),
        (None, "id,title\n10,a\n", r"items.csv: missing column 'item_id'.*--items-id-col"),
        (
            "user_id,item_id,timestamp\nu,10,1\nu,20,2\n",
            None,
            r"no user has 3 or more interactions",
        ),
    ],
)
def test_bad_input_messages(
    tmp_path: Path, events: str | None, items: str | None, message: str
) -> None:
    ev, it = write_inputs(tmp_path)
    if events is not None:
        ev.write_text(events)
    if items is not None:
        it.write_text(items)
    with pytest.raises(DataError, match=message):
        convert(
            *load_inputs(ev, it),
            tmp_path / "out",
            ConvertOptions(item_emb=emb_file(tmp_path / "e.pq", ITEM_IDS)),
        )
    assert not (tmp_path / "out").exists()


def test_bad_options_and_other_refusals(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--negatives must be >= 1"):
        ConvertOptions(negatives=0)
    with pytest.raises(ConfigError, match="--negatives-sampling 'pop'"):
        ConvertOptions(sampling="pop")
    ev, it = write_inputs(tmp_path)
    with pytest.raises(DataError, match=r"unknown file type '\.json'"):
        load_inputs(ev.rename(ev.with_suffix(".json")), it)
    with pytest.raises(DataError, match=r"missing column 'cover'.*--image-col"):
        load_inputs(ev.with_suffix(".json").rename(ev), it, strict=["cover"], image_col="cover")
    # popularity pool = train-period items {10, 20, 30, 40, 70}; each user touches 4 of them
    events = [("a", i, t) for t, i in enumerate((10, 20, 30, 40, 50, 60))]
    events += [("b", i, t) for t, i in enumerate((70, 20, 30, 40, 50, 60))]
    with pytest.raises(DataError, match="user 'a' leaves only 1 of 5 candidate items"):
        run(tmp_path / "x", events=events, sampling="popularity", negatives=2)
    out, _ = run(tmp_path / "y", events=events, sampling="popularity", negatives=1)
    negatives = {(r["user"], r["item"]) for r in rows_of(out, "train") if r["label"] == 0}
    assert negatives == {("a", 70), ("b", 10)}  # the only item each user left untouched


def test_refuses_to_overwrite_and_force_keeps_other_files(tmp_path: Path) -> None:
    out, _ = run(tmp_path)
    (out / "notes.txt").write_text("mine")
    before = (out / "train.parquet").read_bytes()
    with pytest.raises(DataError, match=r"already holds a data set.*--force"):
        run(tmp_path)
    ev, it = tmp_path / "in" / "events.csv", tmp_path / "in" / "items.csv"
    opts = ConvertOptions(item_emb=tmp_path / "emb.parquet", seed=9)
    convert(*load_inputs(ev, it), out, opts, force=True)
    assert (out / "notes.txt").read_text() == "mine" and (
        out / "train.parquet"
    ).read_bytes() != before
    assert json.loads((out / "dataset.json").read_text())["seed"] == 9


def cli(*argv: str | Path) -> int:
    parser = argparse.ArgumentParser(prog="mmctr")
    cli_convert.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    with to_terminal():  # the summary is logged, as `main` prints it
        code: int = args.func(args)
    return code


def test_cli_and_microlens_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ev, it = write_inputs(tmp_path)
    emb = emb_file(tmp_path / "emb.parquet", ITEM_IDS)
    assert (
        cli(
            "convert",
            "interactions",
            "--events",
            ev,
            "--items",
            it,
            "--out",
            tmp_path / "o",
            "--item-emb",
            emb,
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        "train 16 (25% positive)" in printed
        and "users with fewer than 3 interactions: 1 users" in printed
    )
    with pytest.raises(ConfigError, match="--max-len must be >= 1"):
        cli(
            "convert",
            "interactions",
            "--events",
            ev,
            "--items",
            it,
            "--out",
            tmp_path / "p",
            "--max-len",
            "0",
        )

    pairs = tmp_path / "pairs.tsv"
    pairs.write_bytes(b"1\t10 20 30 40\r\n2\t50 60 70\r\n3\t\r\n4\t10 20\r\n")
    titles = tmp_path / "titles.csv"
    titles.write_text("item,title\n" + "".join(f'{i},"t {i} #x"\n' for i in ITEM_IDS))
    covers = tmp_path / "covers"
    covers.mkdir()
    (covers / "20_frame0.jpg").write_bytes(b"jpg")
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "mmctr.prepare.embed", fake_embedder(calls))
    assert (
        cli(
            "convert",
            "microlens-50k",
            "--pairs",
            pairs,
            "--titles",
            titles,
            "--covers",
            covers,
            "--out",
            tmp_path / "ml",
        )
        == 0
    )
    meta = json.loads((tmp_path / "ml" / "dataset.json").read_text())
    assert meta["skipped"]["users_without_interactions"]["users"] == 1
    assert meta["skipped"]["users_with_fewer_than_3_interactions"]["users"] == 1
    assert meta["counts"]["rows"] == {"train": 4, "valid": 8, "test": 8}
    assert calls[0]["images"][1].endswith("20_frame0.jpg") and calls[0]["images"][0] is None
    pairs.write_text("1 10 20\n")
    with pytest.raises(DataError, match=r"pairs.tsv line 1: expected 'user_id<TAB>item"):
        cli(
            "convert",
            "microlens-50k",
            "--pairs",
            pairs,
            "--titles",
            titles,
            "--out",
            tmp_path / "m2",
        )


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"MicroLens-50k not found at {SHARED}")
def test_microlens_50k_first_2000_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setitem(sys.modules, "mmctr.prepare.embed", fake_embedder(calls))
    meta = convert_microlens(
        SHARED / "MicroLens-50k_pairs.tsv",
        SHARED / "MicroLens-50k_titles.csv",
        tmp_path / "ml",
        options=ConvertOptions(max_users=2000),
        progress=False,
    )
    rows = meta["counts"]["rows"]
    assert meta["counts"]["users"] == 2000 and rows["test"] == rows["valid"] == 8000
    assert meta["skipped"]["users_beyond_max_users"]["users"] == 48_000
    assert meta["counts"]["items"] == 19_220 and meta["tags"]["vocab_size"] > 1000
    data = load_dataset(tmp_path / "ml", DataConfig(), ("train", "valid", "test"))
    assert len(data["train"]) == rows["train"] and data["train"].labels.mean() == 0.25
    assert data.schema.context_vocab_sizes == (11, 11)


def _wide_log(users: int = 30, per_user: int = 8, items: int = 14) -> list[tuple[Any, ...]]:
    """A seeded log over ITEM_IDS[:items]: every user touches ``per_user`` distinct items."""
    rng = np.random.default_rng(3)
    events = []
    for u in range(users):
        for t, i in enumerate(rng.choice(ITEM_IDS[:items], size=per_user, replace=False)):
            events.append((f"u{u:02d}", int(i), t))
    return events


def test_cold_items_never_reach_train(tmp_path: Path) -> None:
    events = _wide_log()
    out, meta = run(tmp_path, events=events, cold_items=0.25, negatives=2)
    cold = set(meta["cold_items"]["ids"])
    assert meta["cold_items"]["of_items_with_train_period_interactions"] == 14
    assert len(cold) == meta["cold_items"]["items"] == 4  # round(0.25 x 14)
    train = rows_of(out, "train")
    assert not any(r["item"] in cold for r in train)  # neither positives nor negatives
    assert not any(set(r["hist"]) & cold for r in train)
    held = [r for s in ("valid", "test") for r in rows_of(out, s) if r["item"] in cold]
    assert {r["label"] for r in held} == {0, 1}  # cold clicks and cold negatives both stay
    log: dict[str, set[int]] = {}
    for u, i, _t in events:
        log.setdefault(u, set()).add(i)
    for split in ("train", "valid", "test"):  # a removed interaction is still no negative
        assert all(r["item"] not in log[r["user"]] for r in rows_of(out, split) if not r["label"])
    ok = meta["counts"]["users"] + meta["cold_items"]["users_dropped"]
    assert ok == 30 and meta["options"]["cold_items"] == 0.25
    assert all(r["views_level"] == r["likes_level"] == 0 for r in held)  # no train-period use
    again, _ = run(tmp_path, "again", events=events, cold_items=0.25, negatives=2)
    for split in ("train", "valid", "test"):
        ta, tb = (pq.read_table(d / f"{split}.parquet") for d in (out, again))
        assert ta.equals(tb)


def test_cold_items_cli_and_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ev, it = write_inputs(tmp_path / "in", _wide_log())
    emb = emb_file(tmp_path / "emb.parquet", ITEM_IDS)
    args = ["convert", "interactions", "--events", ev, "--items", it, "--item-emb", emb]
    args += ["--negatives", "2"]
    assert cli(*args, "--out", tmp_path / "o", "--cold-items", "0.25") == 0
    assert "cold items: 4 held out of the train period" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"--cold-items 1\.5"):
        cli(*args, "--out", tmp_path / "p", "--cold-items", "1.5")
    with pytest.raises(ConfigError, match=r"--cold-items 1\.0"):
        ConvertOptions(cold_items=1.0)
    with pytest.raises(ConfigError, match=r"--cold-items -0\.1"):
        ConvertOptions(cold_items=-0.1)
    with pytest.raises(DataError, match="less than one item"):
        run(tmp_path, cold_items=0.01)
    assert not (tmp_path / "out").exists()
