"""One run's line of an experiment's results: a typed row, saved as result.json and results.csv."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

METRICS = ("auc", "logloss", "gauc")
METRIC_COLUMNS = tuple(f"{split}_{m}" for split in ("valid", "test") for m in METRICS)
# test AUC per bucket of the target item's train occurrences (metrics.FREQUENCY_BUCKETS)
BUCKET_COLUMNS = {
    "unseen": "test_auc_unseen",
    "1-5": "test_auc_1_5",
    "6-50": "test_auc_6_50",
    ">50": "test_auc_over_50",
}


@dataclass
class RunRow:
    """What a job gave: its identity, status, metrics (None where not measured) and costs."""

    variant: str
    value: str  # the swept value ("" in an ablation)
    seed: int
    run: str  # the run folder's name under OUT/runs
    status: Literal["done", "failed"] | None = None
    valid_auc: float | None = None
    valid_logloss: float | None = None
    valid_gauc: float | None = None
    test_auc: float | None = None
    test_logloss: float | None = None
    test_gauc: float | None = None
    test_auc_unseen: float | None = None
    test_auc_1_5: float | None = None
    test_auc_6_50: float | None = None
    test_auc_over_50: float | None = None
    test_bucket_rows: str | None = None  # rows of each bucket, "unseen/1-5/6-50/>50"
    best_epoch: int | None = None
    epochs: int | None = None
    stopped_early: bool | None = None
    train_seconds: float | None = None
    train_samples_per_s: float | None = None  # mean over the run's epochs (metrics.jsonl)
    peak_rss_gb: float | None = None  # the largest of its epochs' (Linux; metrics.jsonl)
    wall_seconds: float | None = None
    parameters: int | None = None
    members: str | None = None  # an ensemble row's runs and fitted weights, "run:w,run:w"
    error: str | None = None

    @property
    def done(self) -> bool:
        return self.status == "done"

    def metric(self, column: str) -> float | None:
        """The value of a metric column such as ``valid_auc``."""
        if column not in METRIC_COLUMNS:
            raise KeyError(f"{column!r} is not a metric column; expected {METRIC_COLUMNS}")
        value: float | None = getattr(self, column)
        return value

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunRow:
        values: dict[str, Any] = {k: raw.get(k) for k in COLUMNS}
        return cls(**values)


COLUMNS = tuple(f.name for f in dataclasses.fields(RunRow))  # results.csv, in this order


def epoch_costs(history: Iterable[Mapping[str, Any]]) -> tuple[float | None, float | None]:
    """A run's mean train samples/s over its epochs and the largest peak resident memory of
    any epoch (GB), from its metrics history; None where no epoch recorded the figure."""
    records = list(history)
    speeds = [float(r["train_samples_per_s"]) for r in records
              if r.get("train_samples_per_s") is not None]  # fmt: skip
    peaks = [float(r["peak_rss_gb"]) for r in records if r.get("peak_rss_gb") is not None]
    speed = round(sum(speeds) / len(speeds), 1) if speeds else None
    return speed, (max(peaks) if peaks else None)
