"""The training loop: Adam, early stopping on valid AUC, learning-rate decay, resumable.

Every source of randomness is reseeded from ``train.seed`` and the epoch number, so a run
killed and resumed from its last checkpoint gives the same weights as one never stopped.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mmctr.config import Config
from mmctr.config.train import TrainConfig
from mmctr.data import Batch, DataSchema, Dataset, Split, iter_batches, num_batches
from mmctr.errors import CheckpointError
from mmctr.model.base import CTRModel
from mmctr.training import checkpoint as ckpt
from mmctr.training.inference import attach_items, autocast, evaluate, model_device, resolve_device
from mmctr.training.lock import run_lock
from mmctr.training.precision import resolve_precision
from mmctr.training.state import TrainState

Log = Callable[[str], None]


@dataclass(frozen=True)
class EpochLoss:
    mean: float  # over rows
    steps: torch.Tensor  # (steps,) each step's mean loss, on the model's device


class Monitor(Protocol):
    """Told what training did; it must not change it (see ``TensorBoardMonitor``)."""

    def epoch(self, epoch: int, step_losses: torch.Tensor, record: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    train_seconds: float
    stopped_early: bool
    history: list[dict[str, Any]]


def make_optimizer(model: torch.nn.Module, tc: TrainConfig) -> torch.optim.Adam:
    """Adam as the paper trains; fused into one kernel unless ``train.fused_adam`` is off
    (docs/performance.md has the timings)."""
    return torch.optim.Adam(
        model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=tc.fused_adam or None
    )


def fit(
    model: CTRModel,
    data: Dataset,
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Log = print,
    monitor: Monitor | None = None,
) -> FitResult:
    """Train on the train split, stop on valid; leave the best weights in ``model``.

    ``monitor`` (e.g. ``TensorBoardMonitor``) is told every step's loss and every epoch's
    record; it never changes what is trained.
    """
    run = ckpt.RunDir(Path(run_dir))
    with run_lock(run.root):
        return _fit_locked(model, data, config, run, resume, progress, log, monitor)


def _fit_locked(
    model: CTRModel,
    data: Dataset,
    config: Config,
    run: ckpt.RunDir,
    resume: bool,
    progress: bool | None,
    log: Log,
    monitor: Monitor | None,
) -> FitResult:
    tc = config.train
    progress = sys.stderr.isatty() if progress is None else progress
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    device = resolve_device(tc.device)
    precision, why = resolve_precision(tc.precision, device)
    if tc.precision != "fp32":
        log(f"precision: {precision} ({why})")
    tc = replace(tc, precision=precision)  # the run's config keeps what was asked ("auto")
    model.to(device)
    attach_items(model, data.items)
    optimizer = make_optimizer(model, tc)
    state = _start_or_resume(run, model, optimizer, data.schema, tc, resume, log)
    ckpt.write_config(run, config)
    train, valid = data["train"], data["valid"]
    while state.should_continue(tc.epochs, tc.patience):
        epoch = state.epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = state.lr
        t0 = time.perf_counter()
        loss = _train_epoch(model, optimizer, train, tc, epoch, progress)
        train_seconds = time.perf_counter() - t0
        metrics = evaluate(model, valid, tc.eval_batch_size, tc.precision)
        improved = state.record(epoch, metrics["auc"], tc.lr_decay, tc.min_lr)
        if improved:
            payload = ckpt.model_payload(model, config, data.schema, epoch=epoch, valid=metrics)
            ckpt.save(payload, run.model)
        record = _epoch_record(epoch, loss.mean, metrics, optimizer, train_seconds, t0, len(train))
        record["improved"] = improved
        if device.type == "cuda":
            record["gpu_peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        state.finish_epoch(record, train_seconds)
        ckpt.save_state(run, state, model, optimizer, data.schema)
        if monitor is not None:
            monitor.epoch(epoch, loss.steps, record)
        log(_epoch_line(record))
    return _finish(run, model, state, data.schema, tc.patience)


def _start_or_resume(
    run: ckpt.RunDir,
    model: CTRModel,
    optimizer: torch.optim.Optimizer,
    schema: DataSchema,
    tc: TrainConfig,
    resume: bool,
    log: Log,
) -> TrainState:
    """A fresh state, or the one saved after the run's last finished epoch."""
    if resume and run.state.exists():
        saved = ckpt.load(run.state)
        schema.check_compatible(
            DataSchema.from_dict(saved["schema"]), where=f"{run.state} (resume)"
        )
        model.load_state_dict(saved["weights"])
        optimizer.load_state_dict(saved["optimizer"])  # moves its state to the params' device
        state = ckpt.train_state_of(saved, run.state)
        # a kill between state.pt and the files written after it leaves those a step behind
        ckpt.write_state_files(run, state)
        log(f"resuming {run.root} after epoch {state.epoch}")
        return state
    if resume:  # killed before the first epoch's state.pt: there is nothing to resume from
        log(f"{run.root}: no finished epoch to resume from; starting from the beginning")
    elif run.has_run():
        raise CheckpointError(
            f"{run.root} already holds a run; pass --resume to continue it or choose another --out"
        )
    return TrainState(lr=tc.lr)


def _epoch_record(
    epoch: int,
    loss: float,
    metrics: dict[str, float],
    optimizer: torch.optim.Optimizer,
    train_seconds: float,
    t0: float,
    rows: int,
) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "train_loss": loss,
        **{f"valid_{k}": v for k, v in metrics.items()},
        "lr": optimizer.param_groups[0]["lr"],
        "train_seconds": round(train_seconds, 3),
        "train_samples_per_s": round(rows / train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - t0 - train_seconds, 3),
    }


def _epoch_line(record: dict[str, Any]) -> str:
    mark = " *" if record["improved"] else ""
    return (
        f"epoch {record['epoch']:3d}  loss {record['train_loss']:.4f}  "
        f"valid auc {record['valid_auc']:.4f}  logloss {record['valid_logloss']:.4f}  "
        f"gauc {record['valid_gauc']:.4f}  {record['train_samples_per_s']:.0f} samples/s{mark}"
    )


def _finish(
    run: ckpt.RunDir, model: CTRModel, state: TrainState, schema: DataSchema, patience: int
) -> FitResult:
    """Load the best weights back into ``model`` and write the run's summary."""
    if state.best_epoch < 1:
        raise CheckpointError(f"{run.root}: no epoch finished, so there is no model to keep")
    best = ckpt.load(run.model)
    model.load_state_dict(best["weights"])
    result = FitResult(
        best_epoch=state.best_epoch,
        best_valid=best["valid"],
        epochs_run=state.epoch,
        train_seconds=state.train_seconds,
        stopped_early=state.bad_epochs >= patience,
        history=state.history,
    )
    ckpt.write_summary(run, result.__dict__ | {"fingerprint": schema.fingerprint})
    return result


def _train_epoch(
    model: CTRModel,
    optimizer: torch.optim.Optimizer,
    train: Split,
    tc: TrainConfig,
    epoch: int,
    progress: bool,
) -> EpochLoss:
    """One pass over ``train`` in the epoch's seeded order. The losses stay on the model's
    device until the epoch ends: reading them every step would stall a GPU."""
    model.train()
    torch.manual_seed(tc.seed + epoch)  # dropout draws depend only on (seed, epoch)
    batches = iter_batches(train, tc.batch_size, shuffle=True, seed=tc.seed + epoch)
    steps = num_batches(train, tc.batch_size)
    bar = tqdm(
        batches,
        total=steps,
        disable=not progress,
        desc=f"epoch {epoch}",
        unit="batch",
        leave=False,
        mininterval=0.5,
    )
    device = model_device(model)
    steps_loss = torch.zeros(steps, device=device)
    total = torch.zeros((), device=device)  # row-weighted: the epoch's mean loss
    count, step = 0, 0
    for step, batch in enumerate(bar):
        loss = train_step(model, optimizer, batch.to(device), tc)
        steps_loss[step] = loss
        total += loss * len(batch)
        count += len(batch)
        if step % 50 == 0:
            _check_finite(float(total), epoch, step)
            bar.set_postfix(loss=f"{float(total) / count:.4f}")
    mean = float(total) / max(count, 1)
    _check_finite(mean, epoch, step)
    return EpochLoss(mean, steps_loss)


def train_step(
    model: CTRModel, optimizer: torch.optim.Optimizer, batch: Batch, tc: TrainConfig
) -> torch.Tensor:
    """One update: forward, binary cross-entropy, backward, clip, Adam. Returns the loss.

    The batch must be on the model's device; the loss is detached and stays there.
    """
    assert batch.labels is not None
    with autocast(batch.history.device, tc.precision):
        logits = model(batch.history, batch.target, batch.context)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32 loss
    loss = F.binary_cross_entropy_with_logits(logits, batch.labels.to(logits.dtype))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    return loss.detach()


def _check_finite(value: float, epoch: int, step: int) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(f"epoch {epoch} step {step}: loss is {value}; lower train.lr")
