"""``mmctr experiment search``: a hyper-parameter search on Optuna, resumable after a kill.

The study lives in ``OUT/study.db`` (SQLite), each trial in ``OUT/trials/trial-NNNN/`` (an
ordinary run folder), and what the search was started with in ``OUT/search.json``. The search
process alone asks for trials and tells their outcome; a trial reports each epoch's valid AUC
to the study itself, so the pruner (median by default) can stop it early.

Killed, a search leaves trials marked running. Run again on the same OUT (the folder's lock
proves no other search is on it) it marks them failed and queues their params again; each
rerun resumes the killed trial's run folder from its last finished epoch, and the count of
finished trials goes on from where it was. ``--trials N`` is the number of finished trials
(complete, pruned or failed; not the ones cut by a kill) the study should hold.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch

from mmctr.config import Config
from mmctr.errors import ConfigError
from mmctr.experiments.parallel import stop_pool, threads_per_job
from mmctr.experiments.runner import ExperimentData, format_duration
from mmctr.search.report import write_report
from mmctr.search.space import Space, trial_config
from mmctr.search.study import (
    RUN_ATTR,
    best_trial,
    check_same_search,
    counted,
    default_pruner,
    open_study,
    prepared_study,
)
from mmctr.search.tracked import log_best, study_run
from mmctr.search.trial import Outcome, load_search_data, run_trial
from mmctr.training.lock import run_lock
from mmctr.training.tracking import Tracking

Log = Callable[[str], None]
_worker: dict[str, Any] = {}
_logger = logging.getLogger("mmctr.search")


@dataclass(frozen=True)
class SearchResult:
    study: optuna.Study
    files: list[Path]  # the tables, plots and best config written into OUT
    test: dict[str, float] | None  # the best trial's test metrics (labelled test only)


@dataclass(frozen=True)
class SearchSettings:
    trials: int = 20
    timeout: float | None = None  # seconds after which no new trial starts
    jobs: int = 1
    pruner: Any = None  # an Optuna pruner; None: median over finished trials, after epoch 1
    seed: int | None = None  # the sampler's seed (default: train.seed)
    tracking: Tracking | None = None  # MLflow: the study a parent run, each trial its child


def run_search(
    base: Config,
    space: Space,
    data_dir: str | Path,
    out: str | Path,
    settings: SearchSettings,
    *,
    log: Log = _logger.info,
) -> SearchResult:
    """Search ``space`` around ``base`` on the data in ``data_dir``, into ``out``; then
    score the best trial on test (when labelled) and write the report (report.py)."""
    if settings.trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {settings.trials}")
    if settings.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {settings.jobs}")
    if settings.timeout is not None and not settings.timeout > 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {settings.timeout}")
    out = Path(out)
    with run_lock(out):  # one search per folder: what is "running" in the study is ours
        check_same_search(out, base, space, data_dir)
        exp = load_search_data(base, space, data_dir)
        seed = base.train.seed if settings.seed is None else settings.seed
        pruner = settings.pruner or default_pruner()
        study = prepared_study(out, seed, pruner, settings.jobs, log)
        with study_run(settings.tracking, out, space, settings.trials) as (parent, trials):
            _Search(study, base, space, exp, out, replace(settings, tracking=trials), log).run()
            test = _best_test(study, out, exp)
            files = write_report(study, space, base, out, test)
            log_best(parent, study, test)
    return SearchResult(study, files, test)


def _best_test(study: optuna.Study, out: Path, exp: ExperimentData) -> dict[str, float] | None:
    """The best trial's test AUC, logloss and gAUC; None without test labels or a best."""
    best = best_trial(study)
    if best is None or exp.test is None:
        return None
    from mmctr.api import load_run
    from mmctr.training.metrics import split_report

    run_dir = out / str(best.user_attrs[RUN_ATTR])
    config = Config.from_saved(
        json.loads((run_dir / "config.json").read_text()), source=str(run_dir)
    )
    scorer = load_run(run_dir, exp.data_dir, items=exp.for_job(config).items)
    probs = scorer.predict(exp.test)
    assert exp.test.labels is not None  # ExperimentData keeps a labelled test only
    report = split_report(exp.test.users, exp.test.labels, probs, None)
    return {k: float(report[k]) for k in ("auc", "logloss", "gauc")}


class _Search:
    """Asks for trials while the budget lasts, runs up to ``jobs`` at once, tells outcomes."""

    def __init__(
        self,
        study: optuna.Study,
        base: Config,
        space: Space,
        exp: ExperimentData,
        out: Path,
        settings: SearchSettings,
        log: Log,
    ) -> None:
        self.study, self.base, self.space, self.exp = study, base, space, exp
        self.out, self.settings, self.log = out, settings, log
        self.t0 = time.perf_counter()
        self.running: dict[int, optuna.trial.Trial] = {}  # trial number -> trial

    def budget_left(self) -> bool:
        if counted(self.study) + len(self.running) >= self.settings.trials:
            return False
        timeout = self.settings.timeout
        return timeout is None or time.perf_counter() - self.t0 < timeout

    def run(self) -> None:
        before = counted(self.study)
        self.log(
            f"search: {before} of {self.settings.trials} trials finished before; "
            f"{self.settings.jobs} at a time; study in {self.out / 'study.db'}"
        )
        if self.settings.jobs == 1:
            self._run_here()
        else:
            self._run_in_workers()
        best = best_trial(self.study)
        line = f"search: {counted(self.study)} trials finished in all"
        if best is not None:
            line += f"; best trial {best.number}: valid auc {best.value:.4f}"
        self.log(line + f" ({format_duration(time.perf_counter() - self.t0)} this time)")

    def _ask(self) -> tuple[optuna.trial.Trial, Config, Path] | None:
        """The next trial, its config and run folder; None when the params drawn make no
        valid config together (told failed at once, e.g. a first_k above max_len)."""
        trial = self.study.ask()
        params = self.space.suggest(trial, self.base)
        run = trial.user_attrs.get(RUN_ATTR) or f"trials/trial-{trial.number:04d}"
        trial.set_user_attr(RUN_ATTR, run)
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        again = trial.user_attrs.get("rerun_of")
        note = f" (rerun of trial {again}, resuming its run)" if again is not None else ""
        self.log(f"[trial {trial.number}] {shown}{note}")
        self.running[trial.number] = trial
        try:
            config = trial_config(self.base, params)
        except ConfigError as exc:
            self._tell(Outcome(trial.number, "failed", error=f"not a valid config: {exc}"))
            return None
        return trial, config, self.out / run

    def _tell(self, outcome: Outcome) -> None:
        trial = self.running.pop(outcome.number)
        for key, value in outcome.to_dict().items():
            if key not in ("number", "history") and value not in (None, ""):
                trial.set_user_attr(key, value)
        tag = f"[trial {outcome.number}]"
        if outcome.state == "failed":
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
            self.log(f"{tag} FAILED: {outcome.error}")
            return
        if outcome.state == "pruned":
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, outcome.value)
        self.log(
            f"{tag} {outcome.state}: valid auc {outcome.value:.4f} (best epoch "
            f"{outcome.best_epoch} of {outcome.epochs}, {outcome.wall_seconds:.0f}s)"
        )

    def _run_here(self) -> None:
        while self.budget_left():
            asked = self._ask()
            if asked is None:
                continue
            trial, config, run_dir = asked
            tag = f"[trial {trial.number}]"
            outcome = run_trial(
                self.study, trial._trial_id, trial.number, config, self.exp, run_dir,
                log=lambda line, tag=tag: self.log(f"{tag} {line}"),  # type: ignore[misc]
                tracking=self.settings.tracking,
            )  # fmt: skip
            self._tell(outcome)

    def _run_in_workers(self) -> None:
        jobs = self.settings.jobs
        threads = threads_per_job(jobs)
        self.log(f"{jobs} trials at a time, each with {threads} torch thread(s)")
        ctx = mp.get_context("spawn")
        pool = ProcessPoolExecutor(
            jobs,
            mp_context=ctx,
            initializer=_start_worker,
            initargs=(
                self.base,
                self.space,
                str(self.exp.data_dir),
                str(self.out),
                self.settings.pruner,
                threads,
            ),
        )
        futures: dict[Future[Outcome], int] = {}
        try:
            while True:
                while len(futures) < jobs and self.budget_left():
                    asked = self._ask()
                    if asked is None:
                        continue
                    trial, config, run_dir = asked
                    future = pool.submit(
                        _worker_trial, trial._trial_id, trial.number, config, str(run_dir),
                        self.settings.tracking,
                    )  # fmt: skip
                    futures[future] = trial.number
                if not futures:
                    break
                done, _ = wait(list(futures), return_when=FIRST_COMPLETED)
                for future in done:
                    number = futures.pop(future)
                    exc = future.exception()
                    if exc is not None:
                        self._tell(Outcome(number, "failed", error=f"{type(exc).__name__}: {exc}"))
                    else:
                        self._tell(future.result())
        except BaseException:
            stop_pool(pool)
            raise
        pool.shutdown(wait=True)


def _start_worker(
    base: Config, space: Space, data_dir: str, out: str, pruner: Any, threads: int
) -> None:
    """A worker reads its own copy of the data once, and opens the study for its trials'
    reports."""
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    exp = load_search_data(base, space, data_dir)
    _worker.update(exp=exp, study=open_study(Path(out), pruner))


def _worker_trial(
    trial_id: int, number: int, config: Config, run_dir: str, tracking: Tracking | None
) -> Outcome:
    return run_trial(
        _worker["study"], trial_id, number, config, _worker["exp"], Path(run_dir),
        log=lambda line: None,  # the run's own train.log has its lines
        tracking=tracking,
    )  # fmt: skip
