"""Training curves for TensorBoard (``mmctr train --tensorboard DIR``, the ``tensorboard`` extra).

Per step: the training loss. Per epoch: the mean training loss, every valid metric, the
learning rate and the training speed. Steps are numbered across epochs, so a resumed run
continues its curves where they stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mmctr.errors import ConfigError

INSTALL_HINT = 'pip install "mmctr[tensorboard]"'


class TensorBoardMonitor:
    """Writes event files under ``log_dir``; a ``fit`` monitor (it changes nothing trained)."""

    def __init__(self, log_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                f"--tensorboard needs the tensorboard package: {INSTALL_HINT}"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def epoch(self, epoch: int, step_losses: torch.Tensor, record: dict[str, Any]) -> None:
        steps = step_losses.numel()
        first = (epoch - 1) * steps  # every epoch has the same number of steps
        for i, loss in enumerate(step_losses.float().cpu().tolist()):
            self.writer.add_scalar("train/loss_step", loss, first + i + 1)
        self.writer.add_scalar("train/loss", record["train_loss"], epoch)
        self.writer.add_scalar("train/lr", record["lr"], epoch)
        self.writer.add_scalar("train/samples_per_s", record["train_samples_per_s"], epoch)
        for key, value in record.items():
            if key.startswith("valid_"):
                self.writer.add_scalar(f"valid/{key.removeprefix('valid_')}", value, epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
