"""`mmctr sample`: whole train groups drawn by the seed, seeded valid users, atomic output."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr.cli.main import main
from mmctr.data import DataConfig, load_dataset
from mmctr.data.layout import ROW_SCHEMA
from mmctr.prepare import sample as sample_mod
from mmctr.prepare.sample import sample_dataset

FILES = ("train.parquet", "valid.parquet", "test.parquet", "item_info.parquet")


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def grouped_train(path: Path, seq_len: int, seed: int = 0) -> pa.Table:
    """A train file of runs of 1-4 rows sharing (user, history), with small user and history
    pools so that neighbouring runs often share one of the two, and sometimes both (then they
    form one group). Written in row groups of 5 rows so that groups straddle row groups.
    """
    rng = np.random.default_rng(seed)
    histories = rng.integers(0, 30, size=(4, seq_len))
    users, seqs = [], []
    for _ in range(60):
        user, h = int(rng.integers(1, 4)), int(rng.integers(0, 4))
        for _ in range(int(rng.integers(1, 5))):
            users.append(user)
            seqs.append(histories[h].tolist())
    n = len(users)
    table = pa.Table.from_pydict(
        {
            "user_id": users,
            "item_seq": seqs,
            "item_id": rng.integers(1, 30, n).tolist(),
            "likes_level": rng.integers(0, 3, n).tolist(),
            "views_level": rng.integers(0, 3, n).tolist(),
            "label": rng.integers(0, 2, n).astype(float).tolist(),
        },
        schema=ROW_SCHEMA,
    )
    pq.write_table(table, path, row_group_size=5)
    return table


def group_ids(table: pa.Table) -> np.ndarray:
    """The definition, row by row: a new group where user or history differ from the row above."""
    users = table.column("user_id").to_pylist()
    seqs = table.column("item_seq").to_pylist()
    ids, current = [], -1
    for i in range(len(users)):
        if i == 0 or users[i] != users[i - 1] or seqs[i] != seqs[i - 1]:
            current += 1
        ids.append(current)
    return np.array(ids)


@pytest.fixture
def grouped_data(tiny_data: Path) -> tuple[Path, pa.Table]:
    """The tiny synthetic set with its train replaced by a file of known groups."""
    seq_len = len(pq.read_table(tiny_data / "valid.parquet").column("item_seq")[0])
    table = grouped_train(tiny_data / "train.parquet", seq_len)
    return tiny_data, table


def no_leftovers(parent: Path) -> bool:
    """No temporary folder of an unfinished sample beside the output."""
    return not [p for p in parent.iterdir() if ".sample-" in p.name]


@pytest.mark.parametrize("batch_rows", [3, 7, 65_536])
def test_train_keeps_exactly_the_groups_drawn_below_the_fraction(
    grouped_data: tuple[Path, pa.Table],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    batch_rows: int,
) -> None:
    data, source = grouped_data
    # small batches put group boundaries and carried groups at every possible offset
    monkeypatch.setattr(sample_mod, "BATCH_ROWS", batch_rows)
    info = sample_dataset(data, tmp_path / "s", train_fraction=0.4, valid_users=5, seed=11)
    gid = group_ids(source)
    u = np.random.default_rng(11).random(gid.max() + 1)
    expected = np.flatnonzero(u[gid] < 0.4)
    got = pq.read_table(tmp_path / "s" / "train.parquet")
    assert got.equals(source.take(expected))
    assert got.schema.equals(source.schema)
    kept_groups = np.unique(gid[expected])
    # every kept group is complete: as many rows as in the source
    kept_rows = np.bincount(gid[expected], minlength=gid.max() + 1)
    assert np.array_equal(kept_rows[kept_groups], np.bincount(gid)[kept_groups])
    assert info["train_groups"] == {"kept": len(kept_groups), "total": int(gid.max() + 1)}
    assert info["rows"]["train"] == len(expected) == got.num_rows
    assert 0 < len(expected) < source.num_rows
    written = pq.ParquetFile(tmp_path / "s" / "train.parquet").metadata
    assert written.row_group(0).column(0).compression == "ZSTD"


def test_fraction_one_keeps_all_of_train(
    grouped_data: tuple[Path, pa.Table], tmp_path: Path
) -> None:
    data, source = grouped_data
    sample_dataset(data, tmp_path / "s", train_fraction=1.0, valid_users=1, seed=0)
    assert pq.read_table(tmp_path / "s" / "train.parquet").equals(source)


def test_a_fraction_that_keeps_no_group_is_an_error(
    grouped_data: tuple[Path, pa.Table], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = grouped_data
    flags = ("--train-fraction", "1e-9", "--valid-users", "5", "--seed", "1")
    code, _, err = run(capsys, "sample", data, tmp_path / "out", *flags)
    assert code == 2 and "kept none of the" in err
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)


def test_same_list_comparison_of_ragged_lists() -> None:
    rng = np.random.default_rng(4)
    lists = [rng.integers(0, 2, int(rng.integers(0, 3))).tolist() for _ in range(300)]
    lengths = np.array([len(x) for x in lists], dtype=np.int64)
    flat = np.array([v for x in lists for v in x], dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    got = sample_mod._same_lists(flat, starts, lengths)
    assert got.tolist() == [lists[i + 1] == lists[i] for i in range(len(lists) - 1)]


def test_valid_users_are_the_seeded_choice(tiny_data: Path, tmp_path: Path) -> None:
    info = sample_dataset(tiny_data, tmp_path / "s", train_fraction=0.5, valid_users=7, seed=5)
    source = pq.read_table(tiny_data / "valid.parquet")
    users = source.column("user_id").to_numpy()
    chosen = np.random.default_rng(5).choice(np.unique(users), size=7, replace=False)
    got = pq.read_table(tmp_path / "s" / "valid.parquet")
    assert got.equals(source.filter(pa.array(np.isin(users, chosen))))
    assert set(got.column("user_id").to_pylist()) == set(chosen.tolist())
    assert info["rows"]["valid"] == got.num_rows
    assert info["valid_users_total"] == len(np.unique(users))


def test_same_seed_same_sample_and_shared_files(
    grouped_data: tuple[Path, pa.Table], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _ = grouped_data
    args = ("--train-fraction", "0.5", "--valid-users", "6")
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        code, out, _ = run(capsys, "sample", data, tmp_path / name, *args, "--seed", seed)
        assert code == 0 and "train " in out and "valid " in out and "rows" in out
    a, b, c = (tmp_path / n for n in "abc")
    for split in ("train.parquet", "valid.parquet"):
        assert pq.read_table(a / split).equals(pq.read_table(b / split))
    assert not pq.read_table(a / "train.parquet").equals(pq.read_table(c / "train.parquet"))
    for name in ("test.parquet", "item_info.parquet"):
        assert (a / name).read_bytes() == (data / name).read_bytes()
        assert os.stat(a / name).st_ino == os.stat(data / name).st_ino  # linked, not copied
    meta = json.loads((a / "dataset.json").read_text())
    assert meta["format"] == "mmctr sample" and meta["seed"] == 3
    assert meta["train_fraction"] == 0.5 and meta["valid_users"] == 6
    assert meta["source"] == str(data.resolve())
    assert sorted(p.name for p in a.iterdir()) == sorted((*FILES, "dataset.json"))


def test_sample_loads_and_copies_when_links_fail(
    tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(sample_mod.os, "link", no_links)
    info = sample_dataset(tiny_data, tmp_path / "s", train_fraction=0.3, valid_users=4, seed=2)
    assert info["shared_files"] == {"test.parquet": "copied", "item_info.parquet": "copied"}
    assert (tmp_path / "s" / "test.parquet").read_bytes() == (
        tiny_data / "test.parquet"
    ).read_bytes()
    data = load_dataset(tmp_path / "s", DataConfig(), ("train", "valid", "test"))
    assert len(data["train"]) == info["rows"]["train"]
    assert len(data["valid"]) == info["rows"]["valid"]
    assert len(data["test"]) == info["rows"]["test"] == 500


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--valid-users", "51"), "has only 50 distinct users"),
        (("--valid-users", "0"), "--valid-users 0: must be >= 1"),
        (("--train-fraction", "0"), "--train-fraction 0.0: must be in (0, 1]"),
        (("--train-fraction", "1.5"), "--train-fraction 1.5: must be in (0, 1]"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(
    tiny_data: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: tuple[str, str],
    message: str,
) -> None:
    defaults = {"--train-fraction": "0.5", "--valid-users": "5"}
    defaults[options[0]] = options[1]
    flags = [x for pair in defaults.items() for x in pair]
    code, _, err = run(capsys, "sample", tiny_data, tmp_path / "out", *flags, "--seed", "1")
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)


def test_existing_output_needs_force(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    flags = ("--train-fraction", "0.5", "--valid-users", "5", "--seed", "1")
    assert run(capsys, "sample", tiny_data, out, *flags)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = run(capsys, "sample", tiny_data, out, "--train-fraction", "0.9", *flags[2:])
    assert code == 2 and "already holds a data set" in err and "--force" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before and no_leftovers(tmp_path)
    code, _, _ = run(
        capsys, "sample", tiny_data, out, "--train-fraction", "0.9", *flags[2:], "--force"
    )
    assert code == 0
    assert json.loads((out / "dataset.json").read_text())["train_fraction"] == 0.9
    # the source itself is never a target, even with --force
    code, _, err = run(capsys, "sample", tiny_data, tiny_data, *flags, "--force")
    assert code == 2 and "is the source folder" in err


@pytest.mark.parametrize("missing", ["test.parquet", "item_info.parquet", "train.parquet"])
def test_missing_input_file_exits_2(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    (tiny_data / missing).unlink()
    flags = ("--train-fraction", "0.5", "--valid-users", "5", "--seed", "1")
    code, _, err = run(capsys, "sample", tiny_data, tmp_path / "out", *flags)
    assert code == 2 and f"{missing}: file not found" in err
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)


def test_missing_column_exits_2(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    valid = pq.read_table(tiny_data / "valid.parquet").drop_columns(["user_id"])
    pq.write_table(valid, tiny_data / "valid.parquet")
    flags = ("--train-fraction", "0.5", "--valid-users", "5", "--seed", "1")
    code, _, err = run(capsys, "sample", tiny_data, tmp_path / "out", *flags)
    assert code == 2 and "valid.parquet: missing column 'user_id'" in err
    assert not (tmp_path / "out").exists() and no_leftovers(tmp_path)
