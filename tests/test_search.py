"""`mmctr experiment search`: the space file, trials as run folders, the pruner, the report,
and a search SIGKILLed in the middle of a trial that resumes where it was."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import optuna
import pytest
from test_crash import STEPS_PER_EPOCH, mmctr
from test_tracking import artifacts, runs_of, store  # noqa: F401 (store: a fixture)

from mmctr.cli.main import main
from mmctr.config import Config, load_config
from mmctr.errors import ConfigError
from mmctr.search import SearchSettings, load_space, run_search
from mmctr.search.study import INTERRUPTED, counted, open_study
from mmctr.training.summary import RunSummary

SPACE = """
[[param]]
key = "train.lr"
type = "float"
low = 1e-4
high = 1e-2
log = true

[[param]]
key = "model.kind"
type = "categorical"
choices = ["target_transformer", "din"]

[[param]]
key = "model.target_transformer.deep_mlp"
type = "categorical"
choices = [[16], [32, 16]]
when = { "model.kind" = "target_transformer" }

[[param]]
key = "model.din.attention_mlp"
type = "categorical"
choices = [[8], [16, 8]]
when = { "model.kind" = "din" }
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def trained(out: Path, run: str) -> RunSummary:
    return RunSummary.read(out / run / "summary.json")


def test_a_three_trial_search_end_to_end(
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    space = write(tmp_path / "space.toml", SPACE)
    out = tmp_path / "search"
    args = ["experiment", "search", "--data", str(tiny_data_master), "--config",
            str(tiny_config_file), "--space", str(space), "--out", str(out),
            "--trials", "3"]  # fmt: skip
    assert main(args) == 0
    study = open_study(out)
    done = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert counted(study) == 3 and len(done) == 3
    for trial in done:
        # every trial is an ordinary run folder, trained with exactly the params drawn for it
        run_dir = out / trial.user_attrs["run"]
        saved = Config.from_saved(json.loads((run_dir / "config.json").read_text()), source="t")
        assert saved.train.lr == trial.params["train.lr"]
        assert saved.model.kind == trial.params["model.kind"]
        assert trained(out, trial.user_attrs["run"]).best_valid.auc == trial.value
        # conditional: each trial has its kind's param and not the other kind's
        mine = f"model.{saved.model.kind}."
        assert (
            [k for k in trial.params if k.count(".") == 2]
            == [k for k in trial.params if k.startswith(mine)]
            != []
        )
        assert main(["evaluate", "--run", str(run_dir), "--data", str(tiny_data_master)]) == 0
    best = json.loads((out / "best.json").read_text())
    assert best["valid_auc"] == study.best_value and best["test"]["auc"] > 0.5
    # the best config reads back as the best trial's config
    best_config = load_config(out / "best.toml")
    run_config = json.loads((out / best["run"] / "config.json").read_text())
    assert best_config == Config.from_saved(run_config, source="run")
    with open(out / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["trial"]) for r in rows) == [0, 1, 2]
    assert float(rows[0]["valid_auc"]) == pytest.approx(study.best_value)
    text = (out / "results.md").read_text()
    assert "## Importance" in text and f"**Best: trial {study.best_trial.number}**" in text
    for png in ("history.png", "parallel.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # run again with the same budget: nothing left to do, nothing retrained
    mtime = (out / best["run"] / "model.pt").stat().st_mtime_ns
    assert main(args) == 0
    assert counted(open_study(out)) == 3
    assert (out / best["run"] / "model.pt").stat().st_mtime_ns == mtime
    # another space on the same folder is refused
    other = write(tmp_path / "other.toml", SPACE.replace("1e-2", "2e-2"))
    capsys.readouterr()
    assert main([*args[:7], str(other), *args[8:]]) == 2
    assert "another search space" in capsys.readouterr().err


def test_the_pruner_stops_a_trial_and_the_run_says_so(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path
) -> None:
    base = tiny_config.with_overrides(["train.epochs=3"])
    space = load_space(write(tmp_path / "s.toml", SPACE), base)
    # deterministic: no AUC reaches 1, so every trial is pruned after its first epoch
    pruner = optuna.pruners.ThresholdPruner(lower=1.0)
    out = tmp_path / "pruned"
    result = run_search(base, space, tiny_data_master, out, SearchSettings(trials=2, pruner=pruner))
    trials = result.study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    for t in trials:
        summary = trained(out, t.user_attrs["run"])
        assert summary.stopped == "pruned" and summary.epochs_run == 1 < base.train.epochs
        assert t.intermediate_values == {1: summary.best_valid.auc}
        state = json.loads((out / t.user_attrs["run"] / "state.json").read_text())
        assert state["stopped"] == "pruned"
    assert not (out / "best.toml").exists()  # no complete trial, so no best
    assert "0 complete, 2 pruned" in (out / "results.md").read_text()


def test_a_search_killed_mid_trial_resumes_it(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path
) -> None:
    space = write(tmp_path / "space.toml", SPACE)
    out = tmp_path / "search"
    args = ["experiment", "search", "--data", tiny_data_master, "--config", tiny_config_file,
            "--space", space, "--out", out, "--trials", "3", "--no-prune"]  # fmt: skip
    # trial 0 takes 2 epochs; the kill falls in trial 1's second epoch, after its first
    kill_at = 2 * STEPS_PER_EPOCH + STEPS_PER_EPOCH + 5
    assert mmctr(*args, kill=("step", kill_at)) == -9
    study = open_study(out)
    assert counted(study) == 1
    cut = study.trials[1]
    assert cut.state == optuna.trial.TrialState.RUNNING
    assert json.loads((out / cut.user_attrs["run"] / "state.json").read_text())["epoch"] == 1
    assert main([str(a) for a in args]) == 0
    study = open_study(out)
    assert counted(study) == 3
    cut, rerun = study.trials[1], study.trials[2]
    assert cut.state == optuna.trial.TrialState.FAIL and cut.user_attrs[INTERRUPTED]
    assert rerun.user_attrs["rerun_of"] == 1 and rerun.params == cut.params
    # the rerun resumed the cut trial's run folder from its first epoch
    assert rerun.user_attrs["run"] == cut.user_attrs["run"] == "trials/trial-0001"
    log = (out / "trials/trial-0001/train.log").read_text()
    assert "resuming" in log
    assert rerun.value == trained(out, "trials/trial-0001").best_valid.auc
    with open(out / "trials.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(int(r["trial"]) for r in rows) == [0, 2, 3]  # the cut trial is not a row


def test_two_trials_at_once(tiny_data_master: Path, tiny_config: Config, tmp_path: Path) -> None:
    base = tiny_config.with_overrides(["train.epochs=1"])
    space = load_space(write(tmp_path / "s.toml", SPACE), base)
    result = run_search(
        base, space, tiny_data_master, tmp_path / "par", SearchSettings(trials=2, jobs=2)
    )
    trials = result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 2
    for t in trials:
        assert (tmp_path / "par" / t.user_attrs["run"] / "train.log").exists()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            '[[param]]\nkey = "train.lr"\ntype = "float"\nlo = 1e-4\nhigh = 1e-2\n',
            "param 1 (line 1, train.lr): unknown key 'lo'",
        ),
        (
            '[[param]]\nkey = "train.lr"\ntype = "float"\nlow = 1e-2\nhigh = 1e-4\n',
            "low 0.01 > high 0.0001",
        ),
        (
            '[[param]]\nkey = "train.lr"\ntype = "float"\nlow = 0.1\nhigh = 1.0\n\n'
            '[[param]]\nkey = "model.id_width"\ntype = "int"\nlow = 8\nhigh = 32\n',
            "param 2 (line 7, model.id_width): model.id_width = 8: ",
        ),
        (
            '[[param]]\nkey = "model.target_transformer.nope"\ntype = "int"\nlow = 1\nhigh = 2\n',
            "unknown key model.target_transformer.nope",
        ),
        (
            '[[param]]\nkey = "train.lr"\ntype = "float"\nlow = 0\nhigh = 1\nlog = true\n',
            "a log scale needs low > 0",
        ),
        (
            '[[param]]\nkey = "model.kind"\ntype = "categorical"\nchoices = ["seed", "nope"]\n',
            "model.kind = 'nope'",
        ),
        (
            '[[param]]\nkey = "data.train_file"\ntype = "categorical"\nchoices = ["a"]\n',
            "data.item_feature_cols but no other data key",
        ),
        (
            '[[param]]\nkey = "model.din.mlp"\ntype = "categorical"\nchoices = [[8]]\n'
            'when = { "model.kind" = "qin" }\n',
            "unknown key model.din",
        ),
        ("[param]\nkey = 1\n", "a list of"),
        ("nothing = 1\n", "unknown table or key 'nothing'"),
        ("[[param]\n", "not valid TOML"),
    ],
)
def test_a_malformed_space_is_refused_naming_the_param(
    text: str,
    needle: str,
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    space = write(tmp_path / "bad.toml", text)
    out = tmp_path / "out"
    code = main(["experiment", "search", "--data", str(tiny_data_master), "--config",
                 str(tiny_config_file), "--space", str(space), "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err and str(space) in err
    assert not out.exists()  # refused before anything was written


def test_a_space_draws_only_what_its_conditions_allow(tiny_config: Config, tmp_path: Path) -> None:
    space = load_space(write(tmp_path / "s.toml", SPACE), tiny_config)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    kinds = set()
    for _ in range(12):
        trial = study.ask()
        params = space.suggest(trial, tiny_config)
        kind = params["model.kind"]
        kinds.add(kind)
        other = "din" if kind == "target_transformer" else "target_transformer"
        assert any(k.startswith(f"model.{kind}.") for k in params)
        assert not any(k.startswith(f"model.{other}.") for k in params)
        study.tell(trial, 0.5)
    assert kinds == {"target_transformer", "din"}
    with pytest.raises(ConfigError, match=r"when names 'model\.nothing'"):
        load_space(
            write(tmp_path / "w.toml", SPACE.replace('when = { "model.kind" = "din" }',
                                                     'when = { "model.nothing" = 1 }')),
            tiny_config,
        )  # fmt: skip
    # a condition on a key of the base config: checked with the condition applied
    qin = '[[param]]\nkey = "model.qin.num_layers"\ntype = "int"\nlow = 1\nhigh = 2\n'
    only_qin = load_space(write(tmp_path / "q.toml", qin + 'when = { "model.kind" = "qin" }\n'),
                          tiny_config)  # fmt: skip
    assert only_qin.suggest(study.ask(), tiny_config) == {}  # the base is not QIN
    with pytest.raises(ConfigError, match=r"unknown key model\.qin"):
        load_space(write(tmp_path / "q2.toml", qin), tiny_config)


def test_a_tracked_search_is_a_parent_run_with_its_trials_as_children(
    store: Path,  # noqa: F811
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
) -> None:
    space = write(tmp_path / "space.toml", SPACE)
    out = tmp_path / "tracked-search"
    args = ["experiment", "search", "--data", str(tiny_data_master), "--config",
            str(tiny_config_file), "--space", str(space), "--out", str(out), "--trials", "2",
            "--set", "train.epochs=1", "--track", str(store),
            "--track-experiment", "search"]  # fmt: skip
    assert main(args) == 0
    logged = runs_of(store, "search")
    (parent,) = [r for r in logged if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in logged if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    best = json.loads((out / "best.json").read_text())
    assert parent.info.run_name == "tracked-search" and parent.info.status == "FINISHED"
    assert parent.data.metrics["best_valid_auc"] == pytest.approx(best["valid_auc"])
    assert parent.data.metrics["best_test_auc"] == pytest.approx(best["test"]["auc"])
    assert {"best.toml", "trials.csv", "results.md"} <= artifacts(store, parent.info.run_id)
    assert sorted(c.info.run_name for c in children) == ["trial-0000", "trial-0001"]
    study = open_study(out)
    for child in children:
        trial = study.trials[int(child.data.tags["mmctr.trial"])]
        assert child.data.tags["mmctr.trial_state"] == "complete"
        assert child.data.params["train.lr"] == json.dumps(trial.params["train.lr"])
        assert child.data.metrics["best_valid_auc"] == pytest.approx(trial.value)


def test_the_default_pruner_waits_for_the_second_epoch() -> None:
    from mmctr.search.study import default_pruner

    study = optuna.create_study(direction="maximize", pruner=default_pruner())
    for _ in range(5):  # five finished trials at 0.8 after epochs 1 and 2
        done = study.ask()
        done.report(0.8, 1)
        done.report(0.8, 2)
        study.tell(done, 0.8)
    behind = study.ask()
    behind.report(0.5, 1)
    assert not behind.should_prune()  # epoch 1 is too early to judge a trial
    behind.report(0.5, 2)
    assert behind.should_prune()
