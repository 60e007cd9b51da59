"""Typed training recipe; defaults are the paper's (SPEC section 3)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from mmctr.config.checks import check_fields


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100  # upper bound; early stopping usually ends sooner
    patience: int = 5  # epochs without a better valid AUC before stopping
    batch_size: int = 128
    eval_batch_size: int = (
        1024  # larger batches spill out of cache and, at the paper size, need GBs
    )
    lr: float = 5e-4  # Adam
    fused_adam: bool = True  # PyTorch's fused Adam (same update, one kernel); False: per-tensor
    lr_decay: float = 0.1  # multiply the learning rate by this after an epoch without gain
    min_lr: float = 1e-6  # floor for the decayed learning rate
    grad_clip: float = 10.0  # max global gradient norm; 0 disables clipping
    weight_decay: float = 0.0  # the paper uses no L2 regularisation
    # (embedding_reg / 2) * |P|^2 added to the loss for every parameter of the item and context
    # encoders (FuxiCTR's embedding_regularizer, which QIN's release sets): its gradient is
    # added before clipping, as the release's is (training/epoch.py)
    embedding_reg: float = 0.0
    seed: int = 20242025
    num_threads: int = 0  # torch intra-op threads; 0 = leave PyTorch's default
    device: str = "auto"  # "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:N"
    # bf16: autocast to bfloat16 (fp32 weights and Adam state); auto: bf16 where the hardware
    # has fast bf16 matmuls (AMX / AVX512-BF16 CPUs, GPUs of compute capability >= 8), else fp32
    precision: Literal["fp32", "bf16", "auto"] = "fp32"

    def __post_init__(self) -> None:
        check_fields(self, "train")  # choices, and every float finite (TOML allows nan, inf)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 1:
            raise ValueError(f"train.patience must be >= 1, got {self.patience}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"train.lr_decay must be in (0, 1], got {self.lr_decay}")
        if min(self.min_lr, self.grad_clip, self.weight_decay, self.embedding_reg) < 0:
            raise ValueError(
                "train.min_lr, train.grad_clip, train.weight_decay and train.embedding_reg "
                "must be >= 0"
            )
        if self.device != "auto" and self.device.split(":")[0] not in ("cpu", "cuda"):
            raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, got {self.device!r}")
        if self.precision not in ("fp32", "bf16", "auto"):
            raise ValueError(
                f"train.precision must be 'fp32', 'bf16' or 'auto', got {self.precision!r}"
            )
        if self.num_threads < 0:
            raise ValueError(f"train.num_threads must be >= 0, got {self.num_threads}")
