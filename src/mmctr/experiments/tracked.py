"""An experiment on MLflow (``--track``; training/tracking.py): a parent run named after the
experiment folder, and a child run for each job trained or evaluated in this invocation (a
job read back was logged when it ran)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmctr.experiments.cold import HeldOutItems
from mmctr.experiments.plan import Job, Plan
from mmctr.experiments.rows import RunRow
from mmctr.training.tracking import TrackedRun, Tracking, tracked_run

# what the parent run keeps of the experiment folder (its runs keep their own files)
EXPERIMENT_FILES = ("plan.json", "results.csv", "results.md", "experiment.log",
                    "ablation.png", "sweep.png", "peers.png")  # fmt: skip
# a job's numbers besides its epochs and summary (the valid ones are the summary's)
_ROW_METRICS = ("parameters", "wall_seconds")
_RESULT_FILE = "result.json"  # a job's row, once evaluated (runner.RESULT_FILE)


@contextlib.contextmanager
def experiment_run(
    tracking: Tracking | None,
    plan: Plan,
    out: Path,
    data_dir: str | Path,
    held_out: HeldOutItems | None,
) -> Iterator[Tracking | None]:
    """The experiment's parent run for the block; yields the ``Tracking`` of its jobs (None
    without tracking). It ends FAILED when a job failed, as the exit code says."""
    if tracking is None:
        yield None
        return
    params: dict[str, Any] = {
        "kind": plan.kind,
        "data": str(Path(data_dir).resolve()),
        "runs": len(plan.jobs),
        "variants": ",".join(plan.descriptions),
    }
    if plan.param:
        params["param"] = plan.param
    if held_out is not None:
        params["held_out_items"] = held_out.flags
    name, tags = out.resolve().name, {"mmctr.kind": plan.kind}
    with tracked_run(
        tracking, name, run_dir=out, params=params, tags=tags, files=EXPERIMENT_FILES
    ) as parent:
        yield tracking.child_of(parent.run_id)
        done = sum((out / "runs" / job.name / _RESULT_FILE).is_file() for job in plan.jobs)
        parent.log_metrics({"runs_done": done, "runs_failed": len(plan.jobs) - done})
        if done < len(plan.jobs):
            parent.mark_failed(f"{len(plan.jobs) - done} of {len(plan.jobs)} runs failed")


def job_run(
    tracking: Tracking | None, job: Job, run_dir: Path
) -> contextlib.AbstractContextManager[TrackedRun | None]:
    """The job's MLflow run, tagged with its variant, value and seed; nothing without tracking."""
    if tracking is None:
        return contextlib.nullcontext()
    tags = {
        "mmctr.variant": job.variant,
        "mmctr.value": job.value,
        "mmctr.seed": job.config.train.seed,
    }
    return tracked_run(tracking, job.name, job.config, run_dir, tags=tags)


def log_row(tracked: TrackedRun | None, row: RunRow) -> None:
    """The row's test metrics (when the experiment had test labels), parameters and wall time;
    a failed job's run ends FAILED with its error."""
    if tracked is None:
        return
    values = row.to_dict()
    tracked.log_metrics(
        {k: v for k, v in values.items() if k.startswith("test_") or k in _ROW_METRICS}
    )
    if not row.done:
        tracked.mark_failed(row.error or "failed")
