"""The training loop: learning, reproducibility, early stopping, resume and atomic checkpoints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmctr.config import Config
from mmctr.data import load_dataset
from mmctr.errors import CheckpointError, ConfigError
from mmctr.training import checkpoint as ckpt
from mmctr.training import epoch as epochs
from mmctr.training import inference, run
from mmctr.training.state import TrainState
from mmctr.training.summary import RunSummary
from mmctr.version import mmctr_version

STABLE = ("epoch", "train_loss", "valid_auc", "valid_logloss", "valid_gauc", "lr", "improved")


def train(data_dir: Path, config: Config, run_dir: Path, *, resume: bool = False) -> RunSummary:
    data = load_dataset(data_dir, config.data, ("train", "valid"))
    trained = run.train(data, config, run_dir, resume=resume, progress=False, log=lambda _: None)
    return trained.summary


def stable(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: h[k] for k in STABLE} for h in history]


def test_trains_and_writes_its_run_directory(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = train(tiny_data_master, tiny_config.with_overrides(["train.epochs=3"]), out)
    # on the tiny set, seeds 7-9 reach 0.554-0.611; chance is 0.5 (std about 0.02 at this size)
    assert result.best_valid.auc > 0.54, "the planted signal should show within 3 epochs"
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == list(range(1, result.epochs_run + 1))
    assert lines[0]["train_loss"] > lines[-1]["train_loss"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["best_epoch"] == result.best_epoch
    saved = json.loads((out / "config.json").read_text())
    assert saved.pop("mmctr_version") == summary["mmctr_version"] == mmctr_version()
    assert Config.from_dict(saved) == tiny_config.with_overrides(["train.epochs=3"])
    assert not list(out.glob(".*.tmp")), "no temporary files are left behind"
    state = TrainState.from_dict(json.loads((out / "state.json").read_text()), source="state.json")
    assert state.epoch == result.epochs_run and state.best_epoch == result.best_epoch
    assert state.history == lines and state.best_auc == result.best_valid.auc


def test_same_seed_same_run(tiny_data_master: Path, tiny_config: Config, tmp_path: Path) -> None:
    a = train(tiny_data_master, tiny_config, tmp_path / "a")
    b = train(tiny_data_master, tiny_config, tmp_path / "b")
    assert stable(a.history) == stable(b.history)
    c = train(tiny_data_master, tiny_config.with_overrides(["train.seed=8"]), tmp_path / "c")
    assert stable(a.history) != stable(c.history)


def test_resume_after_a_crash_equals_an_uninterrupted_run(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config.with_overrides(["train.epochs=3", "train.patience=3"])
    whole = train(tiny_data_master, config, tmp_path / "whole")
    real_epoch = epochs.train_epoch

    def crash_in_epoch_2(*args: Any) -> float:
        if args[4] == 2:  # the epoch argument
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(epochs, "train_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data_master, config, tmp_path / "killed")
    monkeypatch.setattr(epochs, "train_epoch", real_epoch)
    assert len((tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()) == 1
    with pytest.raises(CheckpointError, match="already holds a run; pass --resume"):
        train(tiny_data_master, config, tmp_path / "killed")
    resumed = train(tiny_data_master, config, tmp_path / "killed", resume=True)
    assert stable(resumed.history) == stable(whole.history)
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["weights"]
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_early_stopping_decays_lr_and_restores_the_best(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([0.60, 0.70, 0.65, 0.64, 0.90])
    real_evaluate = epochs.score_valid

    def scripted_evaluate(*args: Any) -> dict[str, float]:
        metrics = real_evaluate(*args)
        return {**metrics, "auc": next(scripted)}

    monkeypatch.setattr(epochs, "score_valid", scripted_evaluate)
    config = tiny_config.with_overrides(["train.epochs=10", "train.patience=2", "train.lr=1e-3"])
    result = train(tiny_data_master, config, tmp_path / "run")
    assert result.epochs_run == 4 and result.stopped_early and result.best_epoch == 2
    assert [h["improved"] for h in result.history] == [True, True, False, False]
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 1e-3, 1e-3, 1e-4])
    best = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert best["epoch"] == 2 and best["valid"]["auc"] == 0.70


def test_min_lr_floor(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(epochs, "score_valid", lambda *a: {"auc": 0.5, "logloss": 1.0, "gauc": 0.5})
    config = tiny_config.with_overrides(
        ["train.epochs=4", "train.patience=9", "train.lr=1e-3", "train.min_lr=5e-5"]
    )
    result = train(tiny_data_master, config, tmp_path / "run")
    assert [h["lr"] for h in result.history] == pytest.approx([1e-3, 1e-3, 1e-4, 5e-5])


def test_checkpoint_writes_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    ckpt.save({"format": ckpt.FORMAT_VERSION, "value": 1}, path)

    def torn_save(obj: object, f: Path) -> None:
        Path(f).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save({"format": ckpt.FORMAT_VERSION, "value": 2}, path)
    assert ckpt.load(path)["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_damaged_checkpoint_is_reported(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        ckpt.load_trained(tmp_path)
    with pytest.raises(CheckpointError, match="run directory not found"):
        ckpt.load_trained(tmp_path / "missing")


def test_saved_model_predicts_like_the_trained_one(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path
) -> None:
    train(tiny_data_master, tiny_config, tmp_path / "run")
    trained = ckpt.load_trained(tmp_path / "run")
    data = load_dataset(tiny_data_master, trained.config.data, ("valid",), schema=trained.schema)
    inference.attach_items(trained.model, data.items)
    metrics = inference.evaluate(trained.model, data["valid"], 512)
    best = json.loads((tmp_path / "run" / "summary.json").read_text())["best_valid"]
    assert metrics == pytest.approx(best, rel=1e-6)
    probs = inference.predict_probs(trained.model, data["valid"], 97)
    assert np.allclose(probs, inference.predict_probs(trained.model, data["valid"], 512), atol=1e-6)


def test_atomic_writes_get_ordinary_permissions(tmp_path: Path) -> None:
    from mmctr.atomic import write_text

    write_text(tmp_path / "a.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert (tmp_path / "a.txt").stat().st_mode == (tmp_path / "plain.txt").stat().st_mode
    (tmp_path / "a.txt").chmod(0o640)
    write_text(tmp_path / "a.txt", "y")
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640


def test_bf16_autocast_trains_on_cpu(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path
) -> None:
    config = tiny_config.with_overrides(["train.epochs=1", "train.precision=bf16"])
    result = train(tiny_data_master, config, tmp_path / "run")
    assert np.isfinite(result.history[0]["train_loss"]) and result.best_valid.auc > 0.5


def test_device_choice_is_checked() -> None:
    assert inference.resolve_device("cpu").type == "cpu"
    assert inference.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="sees no CUDA GPU"):
            inference.resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"train\.device must be"):
        Config().with_overrides(["train.device=tpu"])


def test_runs_saved_with_counters_still_resume(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path
) -> None:
    """state.pt of runs before TrainState kept the same fields as a ``counters`` dict."""
    config = tiny_config.with_overrides(["train.epochs=2", "train.patience=2"])
    whole = train(tiny_data_master, config, tmp_path / "whole")
    old = ckpt.RunDir(tmp_path / "old")
    train(tiny_data_master, config.with_overrides(["train.epochs=1"]), old.root)
    saved = ckpt.load(old.state)
    saved["counters"] = saved.pop("train_state")
    ckpt.save(saved, old.state)
    old.summary.unlink()
    ckpt.write_config(old, config)
    resumed = train(tiny_data_master, config, old.root, resume=True)
    assert stable(resumed.history) == stable(whole.history)
    with pytest.raises(CheckpointError, match="training state lacks bad_epochs, best_auc"):
        TrainState.from_dict({"epoch": 1}, source="x")
