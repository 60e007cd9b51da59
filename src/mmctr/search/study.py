"""A search's Optuna study: kept in ``OUT/study.db`` (SQLite), with what the search was
started with in ``OUT/search.json``, and the trials a kill left running marked failed and
queued again so that each rerun resumes the killed trial's run folder."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from mmctr.atomic import write_json
from mmctr.config import Config
from mmctr.errors import ConfigError
from mmctr.search.space import Space

Log = Callable[[str], None]
STUDY_NAME = "mmctr-search"
INTERRUPTED = "interrupted"  # user attr of a trial cut by a kill (rerun, not counted)
RUN_ATTR = "run"  # user attr: the trial's run folder, relative to OUT


def storage_url(out: Path) -> str:
    return f"sqlite:///{out.resolve() / 'study.db'}"


def default_pruner() -> optuna.pruners.BasePruner:
    """Stop a trial whose valid AUC is below the median of the finished trials' at the same
    epoch, once five trials have finished and from the second epoch on."""
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)  # epochs count from 1


def open_study(out: Path, pruner: Any = None, sampler: Any = None) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage_url(out),
        direction="maximize",
        load_if_exists=True,
        pruner=pruner or default_pruner(),
        sampler=sampler,
    )


def check_same_search(out: Path, base: Config, space: Space, data_dir: str | Path) -> None:
    """OUT/search.json: written on the first start, compared on every later one."""
    identity = {"base": base.to_dict(), "space": space.to_dict()}
    saved_file = out / "search.json"
    if saved_file.exists():
        saved = json.loads(saved_file.read_text())
        if {k: saved.get(k) for k in identity} != json.loads(json.dumps(identity)):
            what = "base config" if saved.get("base") != identity["base"] else "search space"
            raise ConfigError(
                f"{out} holds a search with another {what}; resume it with the same --config, "
                "--set and --space, or choose another --out"
            )
        return
    write_json(saved_file, {**identity, "data": str(data_dir)})


def prepared_study(out: Path, seed: int, pruner: Any, jobs: int, log: Log) -> optuna.Study:
    """The study, with the trials a kill left running marked failed and queued again, and a
    TPE sampler seeded from ``seed`` and the number of trials so far (a resumed search draws
    new params, not the first start's again; a constant liar when ``jobs`` run at once)."""
    study = open_study(out, pruner)
    storage = study._storage  # Optuna's storage API, reached through the study
    cut = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    for trial in cut:
        storage.set_trial_user_attr(trial._trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
        attrs = {"rerun_of": trial.number, RUN_ATTR: trial.user_attrs.get(RUN_ATTR)}
        study.enqueue_trial(trial.params, user_attrs=attrs)
    if cut:
        numbers = ", ".join(str(t.number) for t in cut)
        log(f"resuming: trial(s) {numbers} were cut by a stop; queued again, each resuming its run")
    done = len(study.trials) - len(cut)
    study.sampler = optuna.samplers.TPESampler(seed=seed + done, constant_liar=jobs > 1)
    return study


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The complete trial with the best valid AUC; None before any trial completed."""
    try:
        return study.best_trial
    except ValueError:
        return None


def counted(study: optuna.Study) -> int:
    """Finished trials that count towards --trials (not those cut by a kill)."""
    states = (
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.PRUNED,
        optuna.trial.TrialState.FAIL,
    )
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=states)
        if not t.user_attrs.get(INTERRUPTED)
    )
