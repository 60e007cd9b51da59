"""Data-parallel training under torchrun: the same model as one process, rank-0-only writes,
whole-split validation, a killed rank, resuming on another number of processes, two nodes.

Each test starts real processes (gloo on localhost, one thread each) on the tiny data set.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TOML

from mmctr.cli.launch import torchrun_command, without_nproc
from mmctr.training.distributed import World

WORKER = Path(__file__).with_name("ddp_worker.py")
# 3,000 train rows in batches of 255: the last batch (195 rows) splits 98 / 97, so uneven
# shares are exercised every epoch
RECIPE = ["--set", "train.batch_size=255", "--set", "train.epochs=2", "--set", "train.patience=2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *map(str, args)]


def worker(data: Path, config: Path, out: Path, *extra: str) -> list[str]:
    return [str(WORKER), str(data), str(config), str(out), *RECIPE, *extra]


def run(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", weights_only=True)["weights"]  # type: ignore[no-any-return]


def max_diff(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa if wa[k].is_floating_point())


def metrics(run_dir: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def alone(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config file, run dir) of the float64 recipe trained by one process."""
    root = tmp_path_factory.mktemp("ddp")
    config = root / "tiny.toml"
    config.write_text(TINY_TOML)
    out = root / "alone"
    done = run([sys.executable, *worker(tiny_data_master, config, out)])
    assert done.returncode == 0, done.stderr
    return config, out


def test_shares_cover_every_row_once_in_rank_order() -> None:
    for n in (0, 1, 5, 195, 255):
        for size in (1, 2, 3, 8):
            shares = [World(rank=r, size=size).share(n) for r in range(size)]
            rows = [i for s in shares for i in range(n)[s]]
            assert rows == list(range(n))
            lengths = [len(range(n)[s]) for s in shares]
            assert max(lengths) - min(lengths) <= 1


def test_nproc_is_handed_to_torchrun_without_itself() -> None:
    argv = ["train", "--nproc", "2", "--data", "d", "--nproc=3", "--out", "o"]
    assert without_nproc(argv) == ["train", "--data", "d", "--out", "o"]
    cmd = torchrun_command(2, argv)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    assert cmd[-7:] == ["-m", "mmctr", "train", "--data", "d", "--out", "o"]


def test_two_processes_train_the_same_model_as_one(
    tiny_data_master: Path, alone: tuple[Path, Path], tmp_path: Path
) -> None:
    config, one = alone
    two = tmp_path / "two"
    done = run(
        torchrun("--standalone", "--nproc-per-node=2", *worker(tiny_data_master, config, two))
    )
    assert done.returncode == 0, done.stderr
    assert max_diff(one, two) < 1e-6  # float64: only the order of the gradient sums differs
    for a, b in zip(metrics(one), metrics(two), strict=True):
        assert a["valid_auc"] == pytest.approx(b["valid_auc"], abs=1e-9)
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-9)


def test_a_killed_rank_stops_all_and_the_run_resumes_on_one_process(
    tiny_data_master: Path, alone: tuple[Path, Path], tmp_path: Path
) -> None:
    config, one = alone
    out = tmp_path / "killed"
    t0 = time.monotonic()  # 12 steps an epoch: step 18 is in the middle of epoch 2
    cmd = worker(tiny_data_master, config, out, "--kill-rank", "1", "--kill-at-step", "18")
    killed = run(torchrun("--standalone", "--nproc-per-node=2", *cmd))
    assert killed.returncode != 0 and time.monotonic() - t0 < 60
    assert len(metrics(out)) == 1 and not (out / "summary.json").exists()
    resumed = run([sys.executable, *worker(tiny_data_master, config, out, "--resume")])
    assert resumed.returncode == 0, resumed.stderr
    assert max_diff(one, out) < 1e-6
    assert [m["valid_auc"] for m in metrics(out)] == pytest.approx(
        [m["valid_auc"] for m in metrics(one)], abs=1e-9
    )


def test_an_error_on_one_rank_ends_all_with_its_message(
    tiny_data_master: Path, alone: tuple[Path, Path], tmp_path: Path
) -> None:
    config, _ = alone
    t0 = time.monotonic()
    cmd = worker(tiny_data_master, config, tmp_path / "failed", "--kill-rank", "1",
                 "--kill-at-step", "3", "--raise-instead")  # fmt: skip
    failed = run(torchrun("--standalone", "--nproc-per-node=2", *cmd))
    assert failed.returncode != 0 and time.monotonic() - t0 < 60
    assert "FloatingPointError: planted failure on rank 1" in failed.stderr
    assert not (tmp_path / "failed" / "metrics.jsonl").exists()


def test_two_nodes_on_localhost_train_the_same_model(
    tiny_data_master: Path, alone: tuple[Path, Path], tmp_path: Path
) -> None:
    config, one = alone
    out = tmp_path / "nodes"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rendezvous = [f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-backend=c10d", "--rdzv-id=t"]
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]
    nodes = []
    for rank, log in enumerate(logs):
        launch = torchrun("--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}", *rendezvous,
                          *worker(tiny_data_master, config, out))  # fmt: skip
        with log.open("w") as sink:
            nodes.append(subprocess.Popen(launch, env=ENV, stdout=sink, stderr=sink))
    codes = [node.wait(timeout=120) for node in nodes]
    assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    assert max_diff(one, out) < 1e-6


def test_mmctr_train_nproc_writes_once_and_validates_on_the_whole_split(
    tiny_data_master: Path, alone: tuple[Path, Path], tmp_path: Path
) -> None:
    config, _ = alone
    out = tmp_path / "cli"
    mmctr = [sys.executable, "-m", "mmctr"]
    done = run([*mmctr, "train", "--nproc", "2", "--data", str(tiny_data_master), "--config",
                str(config), "--out", str(out)])  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("done: best epoch") == 1  # rank 0 alone speaks
    assert done.stdout.count("data parallel: 2 processes (gloo)") == 1
    records = metrics(out)
    assert [r["epoch"] for r in records] == [1, 2]  # one line per epoch, not one per rank
    summary = json.loads((out / "summary.json").read_text())
    check = run([*mmctr, "evaluate", "--run", str(out), "--data", str(tiny_data_master),
                 "--split", "valid", "--json"])  # fmt: skip
    assert check.returncode == 0, check.stderr
    # the valid AUC training decided on is that of the whole split, scored by one process
    assert json.loads(check.stdout)["auc"] == pytest.approx(summary["best_valid"]["auc"], abs=1e-6)
    again = run([*mmctr, "train", "--nproc", "2", "--data", str(tiny_data_master), "--out",
                 str(out), "--resume"])  # fmt: skip
    assert again.returncode == 0 and again.stdout.count("already finished") == 1
    refused = run([*mmctr, "train", "--nproc", "0", "--data", str(tiny_data_master), "--out",
                   str(tmp_path / "x"), "--config", str(config)])  # fmt: skip
    assert refused.returncode == 2 and "--nproc must be >= 1" in refused.stderr
