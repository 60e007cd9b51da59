"""Run a plan: one run directory per job, resumable, and no failure losing the other runs.

OUT/runs/<variant>-seed<k>/ is a normal run directory (training/checkpoint.py) plus
``result.json`` (the job's row of results.csv, written once it is evaluated) or ``error.log``
(the traceback of its last failure). Running a plan again reads finished runs back, resumes a
half-finished one from its checkpoint and retries failed ones.
"""

from __future__ import annotations

import json
import math
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from mmctr.api import load_run
from mmctr.atomic import write_json, write_text
from mmctr.config import Config, DataConfig
from mmctr.data import Dataset, Split, load_dataset
from mmctr.errors import ConfigError, DataError
from mmctr.experiments import cold
from mmctr.experiments.plan import Job, Plan
from mmctr.experiments.rows import BUCKET_COLUMNS, METRICS, RunRow, epoch_costs
from mmctr.experiments.shared_data import item_view, union_data_config
from mmctr.experiments.tracked import job_run, log_row
from mmctr.model import CTRModel, parameter_counts
from mmctr.training import checkpoint as ckpt
from mmctr.training import inference
from mmctr.training import run as runs
from mmctr.training.loop import Monitor
from mmctr.training.metrics import split_report
from mmctr.training.summary import RunSummary
from mmctr.training.tracking import Tracking

Log = Callable[[str], None]

RESULT_FILE = "result.json"  # a job's row of results.csv, in its run folder, once evaluated


@dataclass(frozen=True)
class ExperimentData:
    data: Dataset  # train and valid, with labels
    test: Split | None  # the test split when it has labels, else None
    data_dir: Path  # where they were read from
    new_items: np.ndarray | None = None  # held-out item ids (cold.py): out of train, marked new
    views: dict[tuple[str, ...], Dataset] = field(default_factory=dict, compare=False)

    def for_job(self, config: Config) -> Dataset:
        """The data as a run of ``config`` sees it: only its own item feature columns
        (shared_data.py); the splits are shared."""
        key = tuple(config.data.item_feature_cols)
        if key not in self.views:
            self.views[key] = item_view(self.data, config.data)
        return self.views[key]

    @cached_property
    def train_counts(self) -> np.ndarray:
        """How many train rows have each item as their target (for the cold-start columns);
        counted once for all the jobs."""
        return np.bincount(self.data["train"].target, minlength=self.data.schema.num_items)


def load_experiment_data(
    plan: Plan, data_dir: str | Path, held_out: cold.HeldOutItems | None = None
) -> ExperimentData:
    """Read the data once for every job of ``plan`` (``read_experiment_data``)."""
    return read_experiment_data([job.config.data for job in plan.jobs], data_dir, held_out)


def read_experiment_data(
    configs: list[DataConfig], data_dir: str | Path, held_out: cold.HeldOutItems | None = None
) -> ExperimentData:
    """Read the data once for runs of these [data] sections (the union of their item features:
    shared_data.py), test if it exists; ``held_out`` items out of train and valid (cold.py)."""
    cfg = union_data_config(configs)
    splits: tuple[str, ...] = ("train", "valid")
    if (Path(data_dir) / cfg.test_file).is_file():
        splits += ("test",)
    data = load_dataset(data_dir, cfg, splits, require_labels=False)
    for name in ("train", "valid"):
        if data[name].labels is None:
            raise DataError(
                f"{cfg.split_file(name)}: has no {cfg.label_col!r} column to learn from"
            )
    test = data["test"] if "test" in splits else None
    labelled_test = test if test is not None and test.labels is not None else None
    if held_out is None:
        return ExperimentData(data, labelled_test, Path(data_dir))
    held = held_out.choose(data.schema.num_items)
    return ExperimentData(cold.hold_out(data, held), labelled_test, Path(data_dir), held)


def check_runs(plan: Plan, out: Path, exp: ExperimentData | None) -> None:
    """Refuse, before anything runs, to resume a run started with another config or data
    (``exp`` None: the config only)."""
    for job in plan.jobs:
        run = ckpt.RunDir(out / "runs" / job.name)
        runs.check_same_config(
            run, job.config, advice="use another --out, or delete that run to redo it"
        )
        if exp is None or not run.finished():
            continue
        if ckpt.read_summary(run).fingerprint != exp.for_job(job.config).schema.fingerprint:
            raise ConfigError(f"{run.root} was trained on other data; use another --out")


def unfinished_jobs(plan: Plan, out: Path) -> list[Job]:
    """The jobs without a result.json yet: the ones that still need training or evaluating."""
    return [j for j in plan.jobs if not (out / "runs" / j.name / RESULT_FILE).exists()]


def finished_rows(plan: Plan, out: Path) -> list[RunRow]:
    """The rows of the jobs (and ensemble rows) that have a result.json, in plan order."""
    names = [j.name for j in plan.jobs]
    names += [f"ensemble-seed{k}" for k in range(plan.ensemble_seeds)]
    files = [out / "runs" / name / RESULT_FILE for name in names]
    return [RunRow.from_dict(json.loads(f.read_text())) for f in files if f.exists()]


def run_serial(
    plan: Plan, exp: ExperimentData, out: Path, progress: Progress, tracking: Tracking | None = None
) -> None:
    """Run (or read back) every job of ``plan`` in this process, one after another."""
    for i, job in enumerate(plan.jobs):
        run_dir = out / "runs" / job.name
        progress.started(i, action_of(run_dir))
        row = run_job(job, exp, run_dir, log=progress.job_log(i), tracking=tracking)
        progress.finished(i, row)


class Progress:
    """The progress lines of a plan ("[i/N] run: ..."), its rows so far and the time left."""

    def __init__(
        self,
        plan: Plan,
        out: Path,
        log: Log,
        *,
        jobs: int = 1,
        after_each: Callable[[list[RunRow]], object] | None = None,
    ) -> None:
        self.plan, self.out, self.log, self.jobs = plan, out, log, jobs
        self.after_each = after_each
        self.results: dict[int, RunRow] = {}
        self.done: list[tuple[str, float]] = []  # (variant, wall seconds) of every finished job

    def tag(self, i: int) -> str:
        return f"[{i + 1}/{len(self.plan.jobs)}] {self.plan.jobs[i].name}"

    def job_log(self, i: int) -> Log:
        tag = self.tag(i)
        return lambda message: self.log(f"{tag}: {message}")

    def started(self, i: int, action: str) -> None:
        remaining = [j.variant for k, j in enumerate(self.plan.jobs) if k not in self.results]
        eta = eta_seconds(self.done, remaining)
        eta = None if eta is None else eta / self.jobs
        self.log(f"{self.tag(i)}: {action}" + (f"; {_eta_text(eta)}" if self.done else ""))

    def finished(self, i: int, row: RunRow) -> None:
        self.results[i] = row
        tag = self.tag(i)
        if row.done:
            self.done.append((self.plan.jobs[i].variant, float(row.wall_seconds or 0.0)))
            test = "" if row.test_auc is None else f", test auc {row.test_auc:.4f}"
            self.log(f"{tag}: valid auc {row.valid_auc:.4f}{test} ({row.wall_seconds:.0f}s)")
        else:
            error_log = self.out / "runs" / self.plan.jobs[i].name / "error.log"
            self.log(f"{tag}: FAILED: {row.error} (see {error_log})")
        if self.after_each is not None:
            self.after_each(self.rows())

    def rows(self) -> list[RunRow]:
        return [self.results[i] for i in sorted(self.results)]


def run_job(
    job: Job, exp: ExperimentData, run_dir: Path, *, log: Log, tracking: Tracking | None = None
) -> RunRow:
    """The job's row: read back when it has one, else trained (or resumed) and evaluated;
    ``tracking``: then also an MLflow run (its test metrics too; FAILED when the job failed)."""
    run = ckpt.RunDir(run_dir)
    if run.finished() and (run_dir / RESULT_FILE).exists():
        return RunRow.from_dict(json.loads((run_dir / RESULT_FILE).read_text()))
    with job_run(tracking, job, run_dir) as tracked:
        row = _run_job(job, exp, run, log, tracked)
        log_row(tracked, row)
    return row


def _run_job(
    job: Job, exp: ExperimentData, run: ckpt.RunDir, log: Log, monitor: Monitor | None
) -> RunRow:
    row = RunRow(job.variant, job.value, job.config.train.seed, job.name)
    t0 = time.perf_counter()
    try:
        model, summary = _trained(job, exp, run, log, monitor)
        _fill_results(row, model, summary, exp, job.config.train.eval_batch_size)
    except Exception as exc:  # recorded, so that one broken run does not stop the others
        write_text(run.root / "error.log", traceback.format_exc())
        row.status, row.error = "failed", " ".join(f"{type(exc).__name__}: {exc}".split())
        row.wall_seconds = round(time.perf_counter() - t0, 2)
        return row
    row.status, row.wall_seconds = "done", round(time.perf_counter() - t0, 2)
    (run.root / "error.log").unlink(missing_ok=True)
    write_json(run.root / RESULT_FILE, row.to_dict())
    return row


def _trained(
    job: Job, exp: ExperimentData, run: ckpt.RunDir, log: Log, monitor: Monitor | None
) -> tuple[CTRModel, RunSummary]:
    """The job's best model and its summary: trained, resumed or (if finished) loaded."""
    data = exp.for_job(job.config)
    if run.finished():
        scorer = load_run(run.root, exp.data_dir, items=data.items)
        cold.mark_new(scorer.model, exp.new_items)  # a loaded model's id rows are not marked
        return scorer.model, ckpt.read_summary(run)
    trained = runs.train(
        data, job.config, run.root, resume=run.has_run(), progress=False, log=log,
        new_items=exp.new_items, monitor=monitor,
    )  # fmt: skip
    return trained.model, trained.summary


def _fill_results(
    row: RunRow, model: CTRModel, summary: RunSummary, exp: ExperimentData, batch_size: int
) -> None:
    valid = summary.best_valid.to_dict()
    row.valid_auc, row.valid_logloss, row.valid_gauc = (valid[k] for k in METRICS)
    if exp.test is not None:
        fill_test(row, inference.predict_probs(model, exp.test, batch_size), exp)
    row.best_epoch, row.epochs = summary.best_epoch, summary.epochs_run
    row.stopped_early = summary.stopped_early
    row.train_seconds = round(summary.train_seconds, 2)
    row.train_samples_per_s, row.peak_rss_gb = epoch_costs(summary.history)
    row.parameters = parameter_counts(model)["total"]


def fill_test(row: RunRow, probs: np.ndarray, exp: ExperimentData) -> None:
    """The test columns of ``row`` from its probabilities of every labelled test row."""
    test = exp.test
    assert test is not None and test.labels is not None
    report = split_report(test.users, test.labels, probs, exp.train_counts[test.target])
    row.test_auc, row.test_logloss, row.test_gauc = (report[k] for k in METRICS)
    buckets = report["by_item_frequency"]
    for b in buckets:
        setattr(row, BUCKET_COLUMNS[str(b["bucket"])], _number(b["auc"]))
    row.test_bucket_rows = "/".join(str(b["rows"]) for b in buckets)


def _number(value: float | int | str) -> float | None:
    """A metric for the table: None where it is nan (a bucket without both classes)."""
    x = float(value)
    return None if math.isnan(x) else x


def action_of(run_dir: Path) -> str:
    """What running the job in ``run_dir`` will do, as a progress line says it."""
    run = ckpt.RunDir(run_dir)
    if run.finished():
        has_result = (run_dir / RESULT_FILE).exists()
        return "finished earlier, read back" if has_result else "trained earlier, evaluating"
    return "resuming from its checkpoint" if run.has_run() else "training"


def eta_seconds(done: list[tuple[str, float]], remaining: Sequence[str]) -> float | None:
    """Time left: each remaining job at the mean duration of finished jobs of its variant, or
    of all finished jobs when none of its variant has finished; None before any has finished."""
    if not done:
        return None
    overall = sum(s for _, s in done) / len(done)
    by_variant: dict[str, list[float]] = {}
    for variant, seconds in done:
        by_variant.setdefault(variant, []).append(seconds)
    return sum(
        sum(by_variant[v]) / len(by_variant[v]) if v in by_variant else overall for v in remaining
    )


def _eta_text(seconds: float | None) -> str:
    return "time left unknown" if seconds is None else f"about {format_duration(seconds)} left"


def format_duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
