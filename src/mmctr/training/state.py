"""Where a run stands between epochs: what early stopping and lr decay decide from.

A ``TrainState`` is plain data (ints, floats, lists of dicts), so it is saved as JSON
(``state.json``, readable without torch) and inside ``state.pt`` beside the weights and the
optimizer. Resuming reads the copy in ``state.pt``: one file written atomically, so the
weights and the state that goes with them can never come from different epochs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mmctr.errors import CheckpointError


@dataclass
class TrainState:
    epoch: int = 0  # epochs finished
    best_auc: float = -math.inf  # best valid AUC so far
    best_epoch: int = -1  # the epoch that reached it; -1 before any
    bad_epochs: int = 0  # epochs in a row without a better valid AUC
    lr: float = 0.0  # the learning rate of the next epoch
    train_seconds: float = 0.0  # time spent in training steps, summed over epochs
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch
    stopped: str = ""  # why the run was told to stop before its own end (e.g. "pruned")

    def should_continue(self, epochs: int, patience: int) -> bool:
        return not self.stopped and self.epoch < epochs and self.bad_epochs < patience

    def record(self, epoch: int, auc: float, lr_decay: float, min_lr: float) -> bool:
        """Account for a finished epoch's valid AUC; returns whether it is a new best.

        An epoch without gain multiplies the learning rate by ``lr_decay``, down to ``min_lr``.
        """
        improved = auc > self.best_auc
        if improved:
            self.best_auc, self.best_epoch, self.bad_epochs = auc, epoch, 0
        else:
            self.bad_epochs += 1
            self.lr = max(self.lr * lr_decay, min_lr)
        return improved

    def finish_epoch(self, record: dict[str, Any], train_seconds: float) -> None:
        """Count the epoch of ``record`` (its metrics line) as finished."""
        self.history = [*self.history, record]
        self.epoch = record["epoch"]
        self.train_seconds += train_seconds

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Any, *, source: str) -> TrainState:
        """Read a saved state (also the ``counters`` dict that older runs saved)."""
        names = {f.name for f in dataclasses.fields(cls)}
        required = names - set(_ADDED_SINCE)
        if not isinstance(raw, dict) or not required <= set(raw):
            missing = sorted(required - set(raw)) if isinstance(raw, dict) else sorted(required)
            raise CheckpointError(f"{source}: training state lacks {', '.join(missing)}")
        return cls(**{name: raw[name] for name in names if name in raw})


# fields that states saved by older mmctr lack: their defaults apply
_ADDED_SINCE = ("stopped",)
