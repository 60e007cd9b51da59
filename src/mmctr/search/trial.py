"""One trial of a search: its config trained into an ordinary run folder, with Optuna told
each epoch's valid AUC and asked whether to go on.

A trial runs in the search's own process (``--jobs 1``) or in a worker process of its own
(spawned, reading the data once); either way it reports to the study through the study's
SQLite file, and what it returns is plain data for the search process to ``tell``.
"""

from __future__ import annotations

import contextlib
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna

from mmctr.atomic import write_text
from mmctr.config import Config
from mmctr.experiments.rows import epoch_costs
from mmctr.experiments.runner import ExperimentData, read_experiment_data
from mmctr.search.space import Space, trial_config
from mmctr.training import checkpoint as ckpt
from mmctr.training import run as runs
from mmctr.training.loop import Monitor
from mmctr.training.summary import RunSummary
from mmctr.training.tracking import TrackedRun, Tracking, tracked_run

Log = Callable[[str], None]
PRUNED = "pruned"


@dataclass(frozen=True)
class Outcome:
    """What became of a trial, as the search records it."""

    number: int
    state: str  # "complete", "pruned" or "failed"
    value: float | None = None  # the run's best valid AUC
    best_epoch: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    peak_rss_gb: float | None = None  # the largest epoch's (Linux; metrics.jsonl)
    wall_seconds: float = 0.0
    error: str = ""
    history: list[float] = field(default_factory=list)  # valid AUC after each epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_search_data(base: Config, space: Space, data_dir: str | Path) -> ExperimentData:
    """Train and valid (and test when labelled) read once, with every item feature column a
    trial may ask for."""
    configs = [base.data]
    for param in space.params:
        if param.key == "data.item_feature_cols":
            configs += [trial_config(base, {param.key: c}).data for c in param.choices]
    return read_experiment_data(configs, data_dir)


def run_trial(
    study: optuna.Study,
    trial_id: int,
    number: int,
    config: Config,
    exp: ExperimentData,
    run_dir: Path,
    log: Log,
    tracking: Tracking | None = None,
) -> Outcome:
    """Train (or resume, or read back) the trial's run; a failure is an outcome, not an
    exception, so that one broken trial does not end the search. With ``tracking`` the trial
    is an MLflow run (a child of the study's), tagged with its number and outcome."""
    tags = {"mmctr.trial": number}
    tracked: contextlib.AbstractContextManager[TrackedRun | None] = (
        contextlib.nullcontext()
        if tracking is None
        else tracked_run(tracking, run_dir.name, config, run_dir, tags=tags)
    )
    with tracked as run_tracking:
        outcome = _outcome(study, trial_id, number, config, exp, run_dir, log, run_tracking)
        if run_tracking is not None:
            run_tracking.set_tags({"mmctr.trial_state": outcome.state})
            if outcome.error:
                run_tracking.mark_failed(outcome.error)
    return outcome


def _outcome(
    study: optuna.Study,
    trial_id: int,
    number: int,
    config: Config,
    exp: ExperimentData,
    run_dir: Path,
    log: Log,
    monitor: Monitor | None,
) -> Outcome:
    t0 = time.perf_counter()
    run = ckpt.RunDir(run_dir)
    try:
        summary = _trained(study, trial_id, config, exp, run, log, monitor)
    except Exception as exc:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / "error.log", traceback.format_exc())
        error = " ".join(f"{type(exc).__name__}: {exc}".split())
        return Outcome(number, "failed", error=error, wall_seconds=time.perf_counter() - t0)
    (run_dir / "error.log").unlink(missing_ok=True)
    return Outcome(
        number,
        PRUNED if summary.stopped == PRUNED else "complete",
        value=summary.best_valid.auc,
        best_epoch=summary.best_epoch,
        epochs=summary.epochs_run,
        train_seconds=round(summary.train_seconds, 2),
        peak_rss_gb=epoch_costs(summary.history)[1],
        wall_seconds=round(time.perf_counter() - t0, 2),
        history=[float(r["valid_auc"]) for r in summary.history],
    )


def _trained(
    study: optuna.Study,
    trial_id: int,
    config: Config,
    exp: ExperimentData,
    run: ckpt.RunDir,
    log: Log,
    monitor: Monitor | None,
) -> RunSummary:
    if run.finished():
        return ckpt.read_summary(run)
    trial = optuna.trial.Trial(study, trial_id)
    resume = run.has_run()
    if resume and run.state_json.exists():  # a rerun after a kill: the pruner sees its epochs
        for record in json.loads(run.state_json.read_text()).get("history", []):
            trial.report(float(record["valid_auc"]), int(record["epoch"]))

    def stop(epoch: int, record: dict[str, Any]) -> str | None:
        trial.report(float(record["valid_auc"]), epoch)
        return PRUNED if trial.should_prune() else None

    trained = runs.train(
        exp.for_job(config), config, run.root, resume=resume, progress=False, log=log,
        monitor=monitor, stopper=stop,
    )  # fmt: skip
    return trained.summary
