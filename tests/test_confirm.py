"""`mmctr experiment confirm`: a search's best trials trained again over seeds, beside its base
config, with their configs read from the search's folder; and its refusals."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import TINY_TOML
from test_search import SPACE

from mmctr.cli.main import main
from mmctr.config import Config
from mmctr.errors import ConfigError
from mmctr.experiments.confirm import confirm_plan

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def search(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 3-trial search on the tiny data."""
    work = tmp_path_factory.mktemp("confirm")
    config = work / "tiny.toml"
    config.write_text(TINY_TOML)
    space = work / "space.toml"
    space.write_text(SPACE)
    out = work / "search"
    args = ["experiment", "search", "--data", str(tiny_data_master), "--config",
            str(config), "--space", str(space), "--out", str(out), "--trials", "3",
            "--set", "train.epochs=1", "--set", "train.num_threads=1"]  # fmt: skip
    assert main(args) == 0
    return out


def _ranked(search: Path) -> list[dict[str, str]]:
    with (search / "trials.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["state"] == "complete"]
    return sorted(rows, key=lambda r: -float(r["valid_auc"]))


def _saved(path: Path) -> Config:
    return Config.from_saved(json.loads(path.read_text()), source=str(path))


def test_the_best_trials_and_the_base_over_seeds(search: Path) -> None:
    plan = confirm_plan(search, top=2, seeds=2, overrides=["train.patience=5"])
    best, second = _ranked(search)[:2]
    names = [f"trial-{best['trial']}", f"trial-{second['trial']}", "base"]
    assert list(plan.descriptions) == names
    assert [(j.variant, j.seed_index) for j in plan.jobs] == [(n, k) for n in names for k in (0, 1)]
    trial = _saved(search / best["run"] / "config.json")
    base = Config.from_saved(json.loads((search / "search.json").read_text())["base"], source="b")
    for job in plan.jobs:
        want = trial if job.variant == names[0] else base
        if job.variant == names[1]:
            want = _saved(search / second["run"] / "config.json")
        assert job.config.train.seed == want.train.seed + job.seed_index
        assert job.config.train.patience == 5  # --set reaches every config
        assert job.config.train.lr == want.train.lr
        assert job.config.model == want.model
    assert f"valid AUC {float(best['valid_auc']):.4f}" in plan.descriptions[names[0]]
    alone = confirm_plan(search, top=1, base=False)
    assert [j.variant for j in alone.jobs] == [names[0]]


def test_trials_named_by_number_replace_the_top(
    search: Path, capsys: pytest.CaptureFixture
) -> None:
    ranked = _ranked(search)
    last, first = int(ranked[-1]["trial"]), int(ranked[0]["trial"])
    plan = confirm_plan(search, top=1, trials=[last, first], base=False)
    assert list(plan.descriptions) == [f"trial-{last}", f"trial-{first}"]  # in the order named
    with pytest.raises(ConfigError, match=r"trials.csv: --trials 99: no complete trial"):
        confirm_plan(search, trials=[first, 99])
    with pytest.raises(ConfigError, match="names a trial twice"):
        confirm_plan(search, trials=[first, first])
    args = ["experiment", "confirm", "--search", str(search), "--data", "nowhere", "--out",
            str(search / "never"), "--trials", "one"]  # fmt: skip
    assert main(args) == 2
    assert "--trials takes trial numbers" in capsys.readouterr().err
    assert not (search / "never").exists()


def test_the_cli_trains_and_reports_them(
    search: Path, tiny_data_master: Path, tmp_path: Path
) -> None:
    out = tmp_path / "confirm"
    args = ["experiment", "confirm", "--search", str(search), "--data", str(tiny_data_master),
            "--out", str(out), "--top", "1", "--quick", "--set", "train.num_threads=1"]  # fmt: skip
    assert main(args) == 0
    with (out / "results.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    best = _ranked(search)[0]
    assert sorted(r["variant"] for r in rows) == sorted([f"trial-{best['trial']}", "base"])
    assert all(r["status"] == "done" and float(r["valid_auc"]) > 0 for r in rows)
    text = (out / "results.md").read_text()
    assert (out / "confirm.png").is_file() and "trial-" in text
    assert text.startswith("# A search's trials trained again\n")
    trained = _saved(out / "runs" / f"trial-{best['trial']}-seed0" / "config.json")
    assert trained.train.lr == _saved(search / best["run"] / "config.json").train.lr


def test_refusals_name_the_file(search: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"trials.csv: not found; --search names"):
        confirm_plan(tmp_path)
    with pytest.raises(ConfigError, match="--top must be >= 1"):
        confirm_plan(search, top=0)
    with pytest.raises(ConfigError, match=r"--set on the config of .*config\.json"):
        confirm_plan(search, overrides=["train.nope=1"])
    empty = tmp_path / "empty"
    empty.mkdir()
    header = "trial,state,valid_auc,run\n"
    (empty / "trials.csv").write_text(header + "0,pruned,0.6,trials/trial-0000\n")
    with pytest.raises(ConfigError, match="no complete trial to confirm yet"):
        confirm_plan(empty)
    (empty / "trials.csv").write_text(header + "0,complete,0.6,trials/trial-0000\n")
    with pytest.raises(ConfigError, match=r"trial-0000/config.json: not found"):
        confirm_plan(empty)
