"""A search on MLflow (``--track``; training/tracking.py): the study a parent run named after
the search folder, holding the space and the budget as params, the best trial's valid and
test metrics, and the report's files; each trial a child run (trial.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import optuna

from mmctr.search.space import Space
from mmctr.search.study import best_trial
from mmctr.training.tracking import TrackedRun, Tracking, tracked_run

# what the study's run keeps of the search folder (the trials keep their own files)
SEARCH_FILES = ("search.json", "trials.csv", "results.md", "best.toml", "best.json",
                "history.png", "parallel.png", "experiment.log")  # fmt: skip


@contextlib.contextmanager
def study_run(
    tracking: Tracking | None, out: Path, space: Space, trials: int
) -> Iterator[tuple[TrackedRun | None, Tracking | None]]:
    """The study's parent run for the block and the ``Tracking`` its trials are logged with
    (both None without tracking)."""
    if tracking is None:
        yield None, None
        return
    params = {"space": ",".join(space.keys), "trials": trials, "space_file": space.source}
    tags = {"mmctr.kind": "search"}
    with tracked_run(
        tracking, out.resolve().name, run_dir=out, params=params, tags=tags, files=SEARCH_FILES
    ) as parent:
        yield parent, tracking.child_of(parent.run_id)


def log_best(parent: TrackedRun | None, study: optuna.Study, test: dict[str, float] | None) -> None:
    """The best trial's number, valid AUC and (once scored) test metrics on the study's run."""
    best = best_trial(study)
    if parent is None or best is None:
        return
    metrics = {"best_trial": best.number, "best_valid_auc": best.value}
    metrics.update({f"best_test_{k}": v for k, v in (test or {}).items()})
    parent.log_metrics(metrics)
    parent.log_params({f"best.{k}": v for k, v in best.params.items()})
