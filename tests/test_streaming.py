"""Streaming the train split (data.streaming): every row once an epoch, seeded, shared among
ranks with steps they all agree on, bounded buffers, and errors that name file, column, row."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr.cli.main import main
from mmctr.config import Config
from mmctr.data import Batch, Shard, StreamingSplit, load_dataset
from mmctr.errors import DataError

GROUP = 200  # rows per row group of the rewritten train file: 15 groups of the 3,000 rows


@pytest.fixture(scope="module")
def grouped(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("grouped")
    for f in tiny_data_master.iterdir():
        shutil.copy(f, out / f.name)
    table = pq.read_table(out / "train.parquet")
    pq.write_table(table, out / "train.parquet", row_group_size=GROUP)
    return out


def streamed(data: Path, config: Config, buffer: int = 500) -> StreamingSplit:
    cfg = replace(config.data, streaming=True, shuffle_buffer=buffer)
    train = load_dataset(data, cfg, ("train", "valid"), stream_train=True).rows("train")
    assert isinstance(train, StreamingSplit)
    return train


def keys(batch: Batch, rows: int | None = None) -> list[tuple[int, float, bytes]]:
    """A row as (target, label, history): what identifies it across batches."""
    n = len(batch) if rows is None else rows
    assert batch.labels is not None
    history = batch.history.numpy().astype(np.int64)
    return [(int(batch.target[i]), float(batch.labels[i]), history[i].tobytes()) for i in range(n)]


def test_an_epoch_streams_every_row_once_in_a_seeded_order(
    grouped: Path, tiny_config: Config
) -> None:
    train = streamed(grouped, tiny_config)
    whole = load_dataset(grouped, tiny_config.data, ("train",))["train"]
    assert whole.labels is not None
    assert len(train) == 3000 and train.steps(256) == math.ceil(3000 / 256)
    epoch = list(train.epoch(256, seed=1, shard=Shard()))
    assert len(epoch) == train.steps(256)
    assert all(mine == rows == len(b) for b, mine, rows in epoch)
    assert sum(rows for _, _, rows in epoch) == 3000
    seen = Counter(k for b, _, _ in epoch for k in keys(b))
    history = whole.history.astype(np.int64)
    rows = zip(whole.target.tolist(), whole.labels.tolist(), [h.tobytes() for h in history],
               strict=True)  # fmt: skip
    assert seen == Counter(rows)
    again = [keys(b) for b, _, _ in train.epoch(256, seed=1, shard=Shard())]
    other = [keys(b) for b, _, _ in train.epoch(256, seed=2, shard=Shard())]
    assert again == [keys(b) for b, _, _ in epoch] and other != again


def test_ranks_share_the_rows_and_agree_on_every_step(grouped: Path, tiny_config: Config) -> None:
    train = streamed(grouped, tiny_config)
    for size, batch in ((2, 256), (4, 4)):  # batch 4: some steps hold no row of some rank
        plans = [list(train.epoch(batch, seed=3, shard=Shard(r, size))) for r in range(size)]
        assert {len(p) for p in plans} == {train.steps(batch)}
        for step in zip(*plans, strict=True):
            totals = {rows for _, _, rows in step}
            assert len(totals) == 1 and sum(mine for _, mine, _ in step) == totals.pop()
            assert all(len(b) == max(mine, 1) for b, mine, _ in step)  # a spare row when none
        real = Counter(k for p in plans for b, mine, _ in p if mine for k in keys(b, mine))
        assert sum(real.values()) == 3000
        mine_only = [Counter(k for b, m, _ in p if m for k in keys(b, m)) for p in plans]
        assert sum(mine_only, Counter()) == real  # no row in two ranks


def test_the_shuffle_buffer_bounds_what_is_held(grouped: Path, tiny_config: Config) -> None:
    train = streamed(grouped, tiny_config, buffer=500)
    chunks = list(train._shuffled(np.arange(15), seed=0, rank=0))
    assert sum(len(c) for c in chunks) == 3000
    assert max(len(c) for c in chunks) <= 500 + GROUP  # a full buffer plus the group read


def test_a_bad_row_in_a_later_row_group_names_file_column_and_row(
    grouped: Path, tiny_config: Config, tmp_path: Path
) -> None:
    data = tmp_path / "bad"
    shutil.copytree(grouped, data)
    table = pq.read_table(data / "train.parquet")
    items = table.column("item_id").to_numpy().copy()
    items[2500] = 10**6  # in row group 12: found only when streaming reaches it
    table = table.set_column(table.schema.get_field_index("item_id"), "item_id",
                             pa.array(items, type=table.schema.field("item_id").type))  # fmt: skip
    pq.write_table(table, data / "train.parquet", row_group_size=GROUP)
    train = streamed(data, tiny_config)  # group 0 is read and fine
    with pytest.raises(DataError, match=r"train\.parquet: column 'item_id' row 2500"):
        list(train.epoch(256, seed=0, shard=Shard()))


def test_fewer_row_groups_than_processes_is_refused(
    tiny_data_master: Path, tiny_config: Config
) -> None:
    train = streamed(tiny_data_master, tiny_config)  # written as one row group
    with pytest.raises(DataError, match="1 row groups, fewer than the 2 processes"):
        next(train.epoch(256, seed=0, shard=Shard(0, 2)))


def test_train_streams_from_the_command_line(
    grouped: Path, tiny_config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(grouped), "--config", str(tiny_config_file), "--set",
            "data.streaming=true", "--set", "data.shuffle_buffer=600", "--no-progress"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "3,000 train (streamed)" in out and "done: best epoch" in out
    assert main([*args, "--out", str(tmp_path / "r2"), "--set", "data.shuffle_buffer=1"]) == 2
    assert "data.shuffle_buffer must be >= 2" in capsys.readouterr().err


def test_stream_check_walks_an_epoch_both_ways(grouped: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "bench" / "stream_check.py"
    figures = []
    for extra in ([], ["--streaming"], ["--streaming", "--ranks", "2", "--rank", "1"]):
        cmd = [sys.executable, str(script), "--data", str(grouped), "--batch", "256", *extra]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        figures.append(json.loads(done.stdout))
    whole, streamed_, half = figures
    assert whole["rows"] == streamed_["rows"] == 3000 and whole["steps"] == streamed_["steps"]
    assert 0 < half["rows"] < 3000 and half["steps"] == whole["steps"]
    assert all(f["peak_rss_gb"] > 0 and f["rows_per_s"] > 0 for f in figures)


def test_two_processes_stream_their_own_row_groups(
    grouped: Path, tiny_config_file: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "mmctr", "train", "--nproc", "2", "--data", str(grouped),
           "--config", str(tiny_config_file), "--out", str(out), "--set", "data.streaming=true",
           "--set", "data.shuffle_buffer=600"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "3,000 train (streamed)" in done.stdout and "data parallel: 2" in done.stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
