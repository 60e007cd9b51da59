"""What a finished run reports: ``summary.json`` as typed values, not dicts read by key."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmctr.errors import CheckpointError


@dataclass(frozen=True)
class Metrics:
    """Scores of a labelled split."""

    auc: float
    logloss: float
    gauc: float

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Metrics:
        return cls(auc=float(raw["auc"]), logloss=float(raw["logloss"]), gauc=float(raw["gauc"]))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class RunSummary:
    """A run's outcome; ``summary.json`` holds it (its presence marks the run finished)."""

    best_epoch: int
    best_valid: Metrics  # valid scores of the best epoch, whose weights the run keeps
    epochs_run: int
    train_seconds: float  # time in training steps, summed over epochs
    stopped_early: bool  # patience ran out before train.epochs
    history: list[dict[str, Any]] = field(default_factory=list)  # metrics.jsonl's records
    fingerprint: str = ""  # the data schema's fingerprint
    stopped: str = ""  # why training was told to stop early from outside ("pruned"), if it was
    mmctr_version: str = ""  # the mmctr that finished the run; "" in runs written before it was

    def to_dict(self) -> dict[str, Any]:
        return {"finished": True, **asdict(self), "best_valid": self.best_valid.to_dict()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str) -> RunSummary:
        try:
            return cls(
                best_epoch=int(raw["best_epoch"]),
                best_valid=Metrics.from_dict(raw["best_valid"]),
                epochs_run=int(raw["epochs_run"]),
                train_seconds=float(raw["train_seconds"]),
                stopped_early=bool(raw.get("stopped_early", False)),
                history=list(raw.get("history", [])),
                fingerprint=str(raw.get("fingerprint", "")),
                stopped=str(raw.get("stopped", "")),
                mmctr_version=str(raw.get("mmctr_version", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: not a run summary ({exc!r})") from None

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot read the run summary ({exc})") from None
        return cls.from_dict(raw, source=str(path))
