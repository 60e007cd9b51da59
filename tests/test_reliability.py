"""Model files that cannot run code, one writer per run folder, and a full disk."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mmctr import atomic
from mmctr.cli.main import main
from mmctr.training import checkpoint as ckpt
from mmctr.training.lock import LOCK_FILE, run_lock

STABLE = ("epoch", "train_loss", "valid_auc", "valid_logloss", "valid_gauc", "lr", "improved")


class _Payload:
    """Unpickling this calls Path.touch on the marker: what a hostile model file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def train_cli(data: Path, config: Path, out: Path, *extra: str) -> int:
    return main(["train", "--data", str(data), "--config", str(config), "--out", str(out),
                 "--no-progress", *extra])  # fmt: skip


def history(run: Path) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: json.loads(line)[k] for k in STABLE} for line in lines]


@pytest.mark.parametrize("name", ["model.pt", "state.pt"])
def test_a_checkpoint_carrying_code_is_refused_and_never_runs(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path, name: str,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run = tmp_path / "run"
    assert train_cli(tiny_data_master, tiny_config_file, run, "--set", "train.epochs=1") == 0
    marker = tmp_path / "payload-ran"
    saved = torch.load(run / name, weights_only=True)
    saved["weights"] = {"trap": _Payload(marker)}
    torch.save(saved, run / name)  # a plain pickle of a code-running object
    capsys.readouterr()
    if name == "model.pt":
        code = main(["evaluate", "--run", str(run), "--data", str(tiny_data_master)])
    else:
        (run / "summary.json").unlink()  # so that --resume reads state.pt
        code = train_cli(tiny_data_master, tiny_config_file, run, "--resume",
                         "--set", "train.epochs=1")  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"{run / name}: refused" in err and "could run code" in err
    assert not marker.exists(), "the payload ran"


def test_checkpoints_load_without_unpickling_code(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    assert train_cli(tiny_data_master, tiny_config_file, run, "--set", "train.epochs=1") == 0
    for name in ("model.pt", "state.pt"):
        torch.load(run / name, weights_only=True)  # raises if anything but plain data is inside
    assert (run / LOCK_FILE).exists() and not list(run.glob(".*.tmp"))


def test_a_second_writer_is_refused_and_a_killed_holder_does_not_block(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from mmctr.training.lock import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
         str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert train_cli(tiny_data_master, tiny_config_file, run) == 2
        err = capsys.readouterr().err
        assert f"{run} is being written by process {holder.pid}" in err
        assert not (run / "model.pt").exists() and not (run / "config.json").exists()
    finally:
        holder.kill()  # SIGKILL: the lock file stays, the lock goes with the process
        holder.wait()
    assert (run / LOCK_FILE).exists()
    assert train_cli(tiny_data_master, tiny_config_file, run, "--set", "train.epochs=1") == 0


def test_the_lock_is_per_folder_and_a_failed_start_leaves_nothing(tmp_path: Path) -> None:
    busy = pytest.raises(Exception, match="is being written by process")
    with run_lock(tmp_path / "a"), run_lock(tmp_path / "b"), busy, run_lock(tmp_path / "a"):
        pass
    with pytest.raises(RuntimeError, match="boom"), run_lock(tmp_path / "new"):
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()


def test_a_full_disk_keeps_the_previous_checkpoint_and_the_run_resumes(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    epochs = ["--set", "train.epochs=2", "--set", "train.patience=2"]
    assert train_cli(tiny_data_master, tiny_config_file, tmp_path / "whole", *epochs) == 0
    run = tmp_path / "run"
    real_replace = os.replace
    state_writes = []

    def full_on_second_state(src: Any, dst: Any) -> None:
        if Path(dst).name == "state.pt":
            state_writes.append(dst)
            if len(state_writes) == 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full_on_second_state)
    capsys.readouterr()
    assert train_cli(tiny_data_master, tiny_config_file, run, *epochs) == 1
    err = capsys.readouterr().err
    assert f"{run / 'state.pt'}: cannot write it (no space left on device)" in err
    assert "the previous version is intact" in err and "Traceback" not in err
    assert ckpt.load(run / "state.pt")["train_state"]["epoch"] == 1  # epoch 1's, whole
    assert not list(run.glob(".*.tmp"))
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert train_cli(tiny_data_master, tiny_config_file, run, *epochs, "--resume") == 0
    assert history(run) == history(tmp_path / "whole")


def test_write_errors_other_than_space_are_not_disguised(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    with pytest.raises(PermissionError), atomic.atomic_path(target):
        raise PermissionError(errno.EACCES, "denied")
    with pytest.raises(Exception, match="nothing was written"), atomic.atomic_path(target):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert not target.exists() and not list(tmp_path.iterdir())
