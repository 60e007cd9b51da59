"""`mmctr experiment ... --held-out-items F`: cold start as an experiment's data option."""

from __future__ import annotations

import csv
import json
import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from mmctr.cli.main import main
from mmctr.config import Config
from mmctr.errors import ConfigError
from mmctr.experiments import ablation_plan, cold, parallel
from mmctr.experiments import runner as runner_module
from mmctr.training import run as runs

Experiment = Callable[..., int]


@pytest.fixture
def experiment(tiny_data_master: Path, tiny_config_file: Path) -> Experiment:
    """`mmctr experiment ablation` of the full model, one epoch, through the real CLI."""

    def run(out: Path, *flags: str) -> int:
        return main(
            ["experiment", "ablation", "--data", str(tiny_data_master), "--config",
             str(tiny_config_file), "--out", str(out), "--variants", "full",
             "--set", "train.epochs=1", *flags]
        )  # fmt: skip

    return run


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_held_out_items_train_without_them_and_resume(
    experiment: Experiment,
    tiny_data_master: Path,
    tiny_config: Config,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "exp"
    real_fit, seen = runs.fit, dict[str, Any]()

    def watching_fit(model: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.update(train=data["train"].target, valid=data["valid"].target)
        seen["rows_before"] = model.items.id_rows.clone()
        result = real_fit(model, data, *args, **kwargs)
        seen["rows_after"] = model.items.id_rows.clone()
        return result

    monkeypatch.setattr(runs, "fit", watching_fit)  # what the run owner trains with
    assert experiment(out, "--held-out-items", "0.2") == 0
    saved = json.loads((out / cold.HELD_OUT_FILE).read_text())
    held = np.array(saved["ids"])
    assert (saved["fraction"], saved["seed"], saved["count"]) == (0.2, 2025, len(held))
    assert len(held) == round(saved["num_items"] * 0.2) and len(set(held)) == len(held) > 0
    assert not np.isin(seen["train"], held).any() and not np.isin(seen["valid"], held).any()
    for rows in (seen["rows_before"], seen["rows_after"]):
        assert (rows[held] == 0).all()  # and only them, besides padding
        assert rows[1:].count_nonzero() == rows.numel() - 1 - len(held)

    (row,) = read_csv(out / "results.csv")
    assert row["status"] == "done" and 0.0 <= float(row["test_auc_unseen"]) <= 1.0
    plan = ablation_plan(tiny_config, None, variants=["full"])
    exp = runner_module.load_experiment_data(plan, tiny_data_master, cold.HeldOutItems(0.2))
    assert exp.test is not None and exp.new_items is not None
    assert np.array_equal(exp.new_items, held)
    unseen = int((exp.train_counts[exp.test.target] == 0).sum())
    cold_rows = int(np.isin(exp.test.target, held).sum())
    assert int(row["test_bucket_rows"].split("/")[0]) == unseen >= cold_rows > 0
    table = (out / "results.md").read_text()
    assert "items were held out of training (`--held-out-items 0.2 --held-out-seed 2025`)" in table
    assert "held out of training: " in capsys.readouterr().out

    # read back for evaluation: the loaded model marks the held items again, same results
    (out / "runs/full-seed0" / runner_module.RESULT_FILE).unlink()
    seen.clear()
    real_fill, models = runner_module._fill_results, []

    def watching_fill(row: Any, model: Any, *args: Any) -> None:
        models.append(model)
        real_fill(row, model, *args)

    monkeypatch.setattr(runner_module, "_fill_results", watching_fill)
    assert experiment(out, "--held-out-items", "0.2") == 0
    assert not seen  # not trained again
    assert (models[0].items.id_rows[torch.from_numpy(held)] == 0).all()
    (again,) = read_csv(out / "results.csv")
    assert {k: v for k, v in again.items() if k != "wall_seconds"} == {
        k: v for k, v in row.items() if k != "wall_seconds"
    }

    models.clear()  # finished and evaluated: read back, neither trained nor scored
    assert experiment(out, "--held-out-items", "0.2") == 0
    assert not seen and not models
    capsys.readouterr()
    assert experiment(out, "--held-out-items", "0.2", "--report") == 0
    assert "were held out of training" in capsys.readouterr().out

    other: tuple[list[str], ...] = (
        ["--held-out-items", "0.3"],
        ["--held-out-items", "0.2", "--held-out-seed", "1"],
        [],
    )
    for flags in other:  # another setting, or none, on the same OUT
        assert experiment(out, *flags) == 2
        assert "--held-out-items 0.2 --held-out-seed 2025" in capsys.readouterr().err
    assert not seen


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1", "nan"])
def test_a_bad_share_is_refused_naming_the_flag(
    value: str,
    experiment: Experiment,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "exp"
    assert experiment(out, "--held-out-items", value) == 2
    assert "--held-out-items must be a share of the items between 0 and 1" in (
        capsys.readouterr().err
    )
    assert not out.exists()


def test_seed_without_share_and_a_share_of_no_item_are_refused(
    experiment: Experiment, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert experiment(tmp_path / "a", "--held-out-seed", "3") == 2
    assert "--held-out-seed needs --held-out-items" in capsys.readouterr().err
    assert experiment(tmp_path / "b", "--held-out-items", "1e-9") == 2
    assert "holds out 0 of the data's" in capsys.readouterr().err


def test_the_draw_is_seeded_and_an_experiment_started_without_is_refused(tmp_path: Path) -> None:
    a, b = cold.HeldOutItems(0.1).choose(1001), cold.HeldOutItems(0.1, seed=1).choose(1001)
    assert np.array_equal(a, cold.HeldOutItems(0.1).choose(1001)) and not np.array_equal(a, b)
    assert len(a) == 100 and a.min() >= 1 and a.max() <= 1000 and (np.diff(a) > 0).all()
    (tmp_path / "runs" / "full-seed0").mkdir(parents=True)
    cold.check_saved(tmp_path, None)
    with pytest.raises(ConfigError, match="started without --held-out-items"):
        cold.check_saved(tmp_path, cold.HeldOutItems(0.1))


def test_parallel_workers_hold_the_same_items_out(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(parallel, "_worker", {})
    plan = ablation_plan(tiny_config, None, variants=["full"])
    setting = cold.HeldOutItems(0.2)
    parallel._start_worker(plan, str(tiny_data_master), str(tmp_path), queue.Queue(), 1, setting)
    exp = parallel._worker["exp"]
    serial = runner_module.load_experiment_data(plan, tiny_data_master, setting)
    assert exp.new_items is not None and serial.new_items is not None
    assert np.array_equal(exp.new_items, serial.new_items)
    assert len(exp.data["train"]) == len(serial.data["train"]) and exp.test is not None
    assert not np.isin(exp.data["train"].target, exp.new_items).any()
