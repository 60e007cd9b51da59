"""An experiment end to end: run the plan, keep the tables current, draw the figure at the end.

OUT/
    plan.json        what runs: kind, swept key, jobs, variant descriptions
    held_out_items.json  with --held-out-items only: the setting and the ids (cold.py)
    experiment.log   every progress line, timestamped (appended across invocations)
    runs/<job>/      one run directory per job (runner.py)
    results.csv      one row per run, rewritten after each run
    results.md       mean ± std per variant, rewritten after each run
    ablation.png | sweep.png | peers.png
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path

from mmctr.atomic import write_json
from mmctr.errors import ConfigError
from mmctr.experiments import cold
from mmctr.experiments.ensemble_rows import ensemble_rows
from mmctr.experiments.plan import Plan
from mmctr.experiments.plots import bar_chart, line_plot
from mmctr.experiments.report import Summary, results_markdown, write_tables
from mmctr.experiments.rows import RunRow
from mmctr.experiments.runner import (
    ExperimentData,
    Log,
    Progress,
    check_runs,
    finished_rows,
    format_duration,
    load_experiment_data,
    run_serial,
    unfinished_jobs,
)
from mmctr.experiments.tracked import experiment_run
from mmctr.logs import logger
from mmctr.runtime import release_freed_memory
from mmctr.training.lock import run_lock
from mmctr.training.tracking import Tracking


@dataclass(frozen=True)
class ExperimentResult:
    rows: list[RunRow]
    summaries: list[Summary]
    figure: Path | None  # None when no run finished

    @property
    def failed(self) -> list[str]:
        return [r.run for r in self.rows if not r.done]


_log = logger("experiments")


def file_log(out: Path, echo: Log = _log.info) -> Log:
    """Log a line (to ``mmctr.experiments``) and append it, timestamped, to
    OUT/experiment.log (OUT made on first use)."""

    def log(message: str) -> None:
        echo(message)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "experiment.log", "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    return log


def write_plan(plan: Plan, out: Path) -> None:
    jobs = [
        {"run": j.name, "variant": j.variant, "value": j.value, "seed": j.config.train.seed}
        for j in plan.jobs
    ]
    write_json(
        out / "plan.json",
        {"kind": plan.kind, "param": plan.param, "variants": plan.descriptions, "jobs": jobs},
    )


def run_experiment(
    plan: Plan,
    data_dir: str | Path,
    out: str | Path,
    *,
    log: Log = _log.info,
    jobs: int = 1,
    held_out: cold.HeldOutItems | None = None,
    tracking: Tracking | None = None,
) -> ExperimentResult:
    """Run ``plan`` on the data in ``data_dir`` into ``out``, ``jobs`` runs at a time;
    ``held_out``: items held out of training in every run (cold.py); ``tracking``: the
    experiment on MLflow, its jobs trained here as child runs (tracked.py)."""
    if jobs < 1:  # before the data is read
        raise ConfigError(f"--jobs must be >= 1, got {jobs}")
    out = Path(out)
    with run_lock(out):  # one experiment process per folder; each run is locked as well
        cold.check_saved(out, held_out)  # before the data is read; the ids once it is
        with experiment_run(tracking, plan, out, data_dir, held_out) as job_tracking:
            return _run_locked(plan, data_dir, out, log, jobs, held_out, job_tracking)


def report(plan: Plan, out: str | Path, held_out: cold.HeldOutItems | None = None) -> str:
    """results.md's text for the runs of ``plan`` finished so far in ``out``, and a line on the
    rest; trains nothing and writes nothing, so it can watch an experiment that is running."""
    out = Path(out)
    if not (out / "runs").is_dir():
        raise ConfigError(f"{out}: no runs folder; is this an experiment folder?")
    check_runs(plan, out, None)
    cold.check_saved(out, held_out)
    rows = finished_rows(plan, out)
    text = results_markdown(plan, rows, _held_note(out))[1]
    missing = [j.name for j in plan.jobs if j.name not in {r.run for r in rows}]
    if missing:
        text += f"\nNot finished yet ({len(missing)} of {len(plan.jobs)}): {', '.join(missing)}\n"
    return text


def _held_note(out: Path) -> str | None:
    saved = cold.read_saved(out)
    return None if saved is None else cold.note(saved)


def _hold_out(exp: ExperimentData, held_out: cold.HeldOutItems, out: Path, log: Log) -> None:
    """Check the held-out ids against OUT's, save them and say so."""
    assert exp.new_items is not None
    cold.check_saved(out, held_out, exp.new_items)
    saved = cold.record(held_out, exp.new_items, exp.data.schema.num_items)
    cold.save(out, saved)
    log(
        f"held out of training: {saved['count']:,} of {saved['num_items']:,} items "
        f"({held_out.flags}): their train and valid rows dropped, their id row zero"
    )


def _run_locked(
    plan: Plan,
    data_dir: str | Path,
    out: Path,
    log: Log,
    jobs: int,
    held_out: cold.HeldOutItems | None,
    tracking: Tracking | None,
) -> ExperimentResult:
    t0 = time.perf_counter()
    exp = load_experiment_data(plan, data_dir, held_out)
    test_note = "with test labels" if exp.test is not None else "test split without labels"
    log(
        f"{plan.kind}: {len(plan.jobs)} runs of {len(plan.descriptions)} variants on {data_dir} "
        f"({len(exp.data['train']):,} train rows, {test_note}); writing to {out}"
    )
    check_runs(plan, out, exp)
    if held_out is not None:
        _hold_out(exp, held_out, out, log)
    note = _held_note(out)
    jobs = max(1, min(jobs, len(unfinished_jobs(plan, out))))  # runs read back need no worker
    write_plan(plan, out)
    progress = Progress(
        plan, out, log, jobs=jobs, after_each=lambda rs: write_tables(plan, rs, out, note)
    )
    if jobs > 1:
        # the workers read their own copies: this process read the data only to check it
        del exp
        release_freed_memory()
        from mmctr.experiments.parallel import run_parallel  # spawns processes: only when asked

        run_parallel(plan, data_dir, out, progress, held_out, tracking)
        data = functools.cache(lambda: load_experiment_data(plan, data_dir, held_out))
    else:
        run_serial(plan, exp, out, progress, tracking)
        data = functools.cache(lambda: exp)
    rows = progress.rows()
    if plan.ensemble_seeds:  # peers: trained runs combined, once every run has its row
        rows += ensemble_rows(plan, rows, out, data, log)
    summaries = write_tables(plan, rows, out, note)
    figure = _figure(plan, summaries, out) if any(r.done for r in rows) else None
    failed = [r.run for r in rows if not r.done]
    log(
        f"done in {format_duration(time.perf_counter() - t0)}: {len(rows) - len(failed)} of "
        f"{len(rows)} runs finished" + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return ExperimentResult(rows, summaries, figure)


def _figure(plan: Plan, summaries: list[Summary], out: Path) -> Path:
    if plan.kind == "ablation":
        return bar_chart(summaries, out / "ablation.png", "Ablation (paper Table 2)")
    if plan.kind == "peers":
        return bar_chart(summaries, out / "peers.png", "Peers on the same data")
    if plan.kind == "confirm":
        return bar_chart(summaries, out / "confirm.png", "A search's best configs, confirmed")
    return line_plot(summaries, out / "sweep.png", plan.param)
