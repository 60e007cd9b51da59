"""Crash consistency: `mmctr train` and `mmctr experiment` killed with SIGKILL at chosen moments,
then resumed, finish exactly as runs never stopped.

Each killed process is a real `mmctr` process that SIGKILLs itself at its kill point: at the
n-th training step, inside the n-th checkpoint write with the temporary file half written
(torn), or with the temporary file complete and the rename not yet done. The kill points are
drawn from a seeded generator, so every CI run checks the same ten.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

STABLE = ("epoch", "train_loss", "valid_auc", "valid_logloss", "valid_gauc", "lr", "improved")

# Runs `mmctr` with a kill point: argv = KIND N mmctr-args...; KIND is step | torn | rename.
KILLER = """
import os, signal, sys
kind, n, args = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
count = [0]

def due():
    count[0] += 1
    return count[0] == n

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if kind == "step":
    from mmctr.training import epoch as loop
    real_step = loop.train_step
    def step(*a, **k):
        if due():
            die()
        return real_step(*a, **k)
    loop.train_step = step
elif kind == "torn":
    from mmctr.training import checkpoint
    real_save = checkpoint.torch.save
    def save(obj, path, *a, **k):
        real_save(obj, path, *a, **k)
        if due():
            size = os.path.getsize(path)
            with open(path, "r+b") as fh:
                fh.truncate(size // 2)
            die()
    checkpoint.torch.save = save
elif kind == "rename":
    from mmctr import atomic
    real_replace = os.replace
    def replace(src, dst):
        if due():
            die()
        real_replace(src, dst)
    atomic.os.replace = replace
from mmctr.cli.main import main
sys.exit(main(args))
"""

STEPS_PER_EPOCH = 12  # tiny train split: 3,000 rows at batch 256
EPOCHS = 3
CHECKPOINT_WRITES = 2 * EPOCHS  # model.pt (when better) and state.pt each epoch


def env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


def mmctr(*args: str | Path, kill: tuple[str, int] | None = None) -> int:
    cmd = [sys.executable, "-m", "mmctr", *map(str, args)]
    if kill is not None:
        cmd = [sys.executable, "-c", KILLER, kill[0], str(kill[1]), *map(str, args)]
    return subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=300).returncode


def kill_points(seed: int = 2025) -> list[tuple[str, int]]:
    """Ten kill points: four training steps, three torn checkpoint writes, three renames."""
    rng = random.Random(seed)
    steps = rng.sample(range(1, STEPS_PER_EPOCH * EPOCHS + 1), 4)
    torn = rng.sample(range(1, CHECKPOINT_WRITES), 3)
    renames = rng.sample(range(1, 10), 3)
    return (
        [("step", n) for n in steps]
        + [("torn", n) for n in torn]
        + [("rename", n) for n in renames]
    )


def finish(run: Path) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    weights = torch.load(run / "model.pt", weights_only=True)["weights"]
    return [{k: json.loads(line)[k] for k in STABLE} for line in lines], weights


@pytest.mark.parametrize("seed", [2025])
def test_sigkilled_training_resumes_to_the_same_finish(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path, seed: int
) -> None:
    sets = ["--set", f"train.epochs={EPOCHS}", "--set", f"train.patience={EPOCHS}",
            "--set", "train.num_threads=1"]  # fmt: skip
    common = ["--data", tiny_data_master, "--config", tiny_config_file, "--no-progress", *sets]
    t0 = time.perf_counter()
    assert mmctr("train", *common, "--out", tmp_path / "whole") == 0
    whole_history, whole_weights = finish(tmp_path / "whole")

    def killed_then_resumed(point: tuple[str, int]) -> Path:
        run = tmp_path / f"{point[0]}-{point[1]}"
        assert mmctr("train", *common, "--out", run, kill=point) == -9, point
        assert not (run / "summary.json").exists()
        assert mmctr("train", *common, "--out", run, "--resume") == 0, point
        return run

    with ThreadPoolExecutor(max_workers=2) as pool:  # two scenarios at a time, 1 thread each
        runs = list(pool.map(killed_then_resumed, kill_points(seed)))
    for run in runs:
        history, weights = finish(run)
        assert history == whole_history, run.name
        assert weights.keys() == whole_weights.keys()
        assert all(torch.equal(weights[k], whole_weights[k]) for k in weights), run.name
        assert not list(run.glob(".*.tmp")), "the resumed run clears the torn temp files"
    print(f"\n10 kill points, 10 identical finishes in {time.perf_counter() - t0:.0f}s")


def test_sigkilled_experiment_resumes_to_the_same_results(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path
) -> None:
    args = ["experiment", "ablation", "--data", tiny_data_master, "--config", tiny_config_file,
            "--variants", "full,no-dcn", "--set", "train.num_threads=1"]  # fmt: skip
    assert mmctr(*args, "--out", tmp_path / "whole") == 0
    # the second run dies mid-epoch: the first is finished, the second resumes from nothing
    assert mmctr(*args, "--out", tmp_path / "killed", kill=("step", STEPS_PER_EPOCH * 2 + 5)) == -9
    assert mmctr(*args, "--out", tmp_path / "killed") == 0
    metrics = ("variant", "status", "valid_auc", "test_auc", "best_epoch", "epochs")

    def rows(out: Path) -> list[dict[str, Any]]:
        lines = (out / "results.csv").read_text().splitlines()
        header = lines[0].split(",")
        return [{k: v for k, v in zip(header, line.split(","), strict=True) if k in metrics}
                for line in lines[1:]]  # fmt: skip

    assert rows(tmp_path / "killed") == rows(tmp_path / "whole")
