"""The training loop: Adam, early stopping on valid AUC, learning-rate decay, resumable.

Every source of randomness is reseeded from ``train.seed`` and the epoch number, so a run
killed and resumed from its last checkpoint gives the same weights as one never stopped.
Runs start in ``training/run.py``, which locks the run folder, checks it, builds the model and
calls ``fit`` here.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from mmctr.config import Config
from mmctr.config.train import TrainConfig
from mmctr.data import DataSchema, Dataset
from mmctr.errors import CheckpointError
from mmctr.logs import logger
from mmctr.model.base import CTRModel
from mmctr.runtime import peak_rss_gb, reset_peak_rss
from mmctr.training import bundle, distributed
from mmctr.training import checkpoint as ckpt
from mmctr.training import epoch as epochs
from mmctr.training.distributed import World
from mmctr.training.inference import resolve_device
from mmctr.training.precision import resolve_precision
from mmctr.training.state import TrainState
from mmctr.training.summary import Metrics, RunSummary
from mmctr.version import mmctr_version

Log = Callable[[str], None]
_log = logger("training")

# Asked after every epoch with its number and record; a reason (e.g. "pruned") stops the run
# there, as if its patience had run out, and is kept in its state and summary.
Stopper = Callable[[int, dict[str, Any]], str | None]


class Monitor(Protocol):
    """Told what training did; it must not change it (see ``TensorBoardMonitor``)."""

    def epoch(self, epoch: int, step_losses: torch.Tensor, record: dict[str, Any]) -> None: ...


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
    run: ckpt.RunDir,
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Log = _log.info,
    monitor: Monitor | None = None,
    stopper: Stopper | None = None,
) -> RunSummary:
    """Train on the train split, stop on valid; leave the best weights in ``model``.

    ``model`` comes from ``run.new_model`` (item table loaded); ``run`` is locked by the
    caller. ``monitor`` (e.g. ``TensorBoardMonitor``) is told every step's loss and every
    epoch's record; it never changes what is trained. In a process group every rank calls
    this; rank 0 alone writes the run. ``stopper`` (a search's pruner) may end training
    after any epoch; it is asked in a single process only.
    """
    world = distributed.current()
    if stopper is not None and world.active:
        raise ValueError("a stopper decides for one process; it cannot stop a process group")
    progress = sys.stderr.isatty() if progress is None else progress
    tc, device = _placed(model, config.train, world, log)
    optimizer = make_optimizer(model, tc)
    state = _start_or_resume(run, model, optimizer, data.schema, tc, resume, log)
    world.barrier()  # every rank has checked the run directory before rank 0 writes to it
    net = _data_parallel(model, world, device, log)
    if world.is_main:  # the item table goes with the run before any model.pt (bundle.py)
        ckpt.write_config(run, config)
        bundle.write_for_training(run.root, data, model, resume=resume and run.state.exists())
    train, valid = data.rows("train"), data["valid"]
    peak_from_start = reset_peak_rss()  # so each epoch's peak is this training's
    while state.should_continue(tc.epochs, tc.patience):
        epoch = state.epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = state.lr
        t0 = time.perf_counter()
        loss = epochs.train_epoch(net, optimizer, train, tc, epoch, progress, world)
        train_seconds = time.perf_counter() - t0
        metrics = epochs.score_valid(model, valid, tc.eval_batch_size, tc.precision, world)
        improved = state.record(epoch, metrics["auc"], tc.lr_decay, tc.min_lr)
        record = _epoch_record(epoch, loss.mean, metrics, optimizer, train_seconds, t0, len(train))
        record["improved"] = improved
        record.update(_peak_memory(device, peak_from_start))
        state.finish_epoch(record, train_seconds)
        if stopper is not None:
            state.stopped = stopper(epoch, record) or ""
        if world.is_main:
            _save_epoch(run, model, optimizer, config, data.schema, state, improved, metrics)
        if monitor is not None:
            monitor.epoch(epoch, loss.steps, record)
        log(_epoch_line(record))
        if state.stopped:
            log(f"stopped after epoch {epoch}: {state.stopped}")
    world.barrier()  # rank 0 has written the best weights that every rank loads back
    return _finish(run, model, state, data.schema, tc.patience, world)


def _placed(
    model: CTRModel, tc: TrainConfig, world: World, log: Log
) -> tuple[TrainConfig, torch.device]:
    """Threads set, ``model`` on its device; the train section with the precision resolved
    (the run's saved config keeps what was asked, such as "auto")."""
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    device = distributed.device_for(world, resolve_device(tc.device))
    precision, why = resolve_precision(tc.precision, device)
    if tc.precision != "fp32":
        log(f"precision: {precision} ({why})")
    model.to(device)
    return replace(tc, precision=precision), device


def _data_parallel(
    model: CTRModel, world: World, device: torch.device, log: Log
) -> torch.nn.Module:
    """``model`` itself alone; across ranks, wrapped to average gradients during backward.

    Parameters a batch does not reach (the Transformer's, when no row has history) get zero
    gradients rather than a hang; gradients live in DDP's buckets (no second copy of the
    cross network's 248 M).
    """
    if not world.active:
        return model
    log(f"data parallel: {world.size} processes ({torch.distributed.get_backend()})")
    # the frozen item buffers are the same on every rank: not re-sent before each forward
    # (the keyword was renamed in PyTorch 2.13; broadcast_buffers before)
    renamed = "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    no_resend: dict[str, Any] = {"forward_sync_buffers" if renamed else "broadcast_buffers": False}
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=True,
        gradient_as_bucket_view=True,
        **no_resend,
    )


def _save_epoch(
    run: ckpt.RunDir,
    model: CTRModel,
    optimizer: torch.optim.Optimizer,
    config: Config,
    schema: DataSchema,
    state: TrainState,
    improved: bool,
    metrics: dict[str, float],
) -> None:
    """The best weights when the epoch improved, then what resuming needs (rank 0's work)."""
    if improved:
        payload = ckpt.model_payload(model, config, schema, epoch=state.epoch, valid=metrics)
        ckpt.save(payload, run.model)
    ckpt.save_state(run, state, model, optimizer, schema)


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


def _peak_memory(device: torch.device, rss_from_start: bool) -> dict[str, float]:
    """The epoch record's memory figures: the process's peak resident memory since training
    started (where it could be reset), and the GPU's peak allocation on CUDA."""
    out = {}
    if rss_from_start:
        out["peak_rss_gb"] = round(peak_rss_gb() or 0.0, 3)
    if device.type == "cuda":
        out["gpu_peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def _epoch_line(record: dict[str, Any]) -> str:
    mark = " *" if record["improved"] else ""
    return (
        f"epoch {record['epoch']:3d}  loss {record['train_loss']:.4f}  "
        f"valid auc {record['valid_auc']:.4f}  logloss {record['valid_logloss']:.4f}  "
        f"gauc {record['valid_gauc']:.4f}  {record['train_samples_per_s']:.0f} samples/s{mark}"
    )


def _finish(
    run: ckpt.RunDir,
    model: CTRModel,
    state: TrainState,
    schema: DataSchema,
    patience: int,
    world: World,
) -> RunSummary:
    """Load the best weights back into ``model`` and write the run's summary."""
    if state.best_epoch < 1:
        raise CheckpointError(f"{run.root}: no epoch finished, so there is no model to keep")
    best = ckpt.load(run.model)
    model.load_state_dict(best["weights"])
    summary = RunSummary(
        best_epoch=state.best_epoch,
        best_valid=Metrics.from_dict(best["valid"]),
        epochs_run=state.epoch,
        train_seconds=state.train_seconds,
        stopped_early=state.bad_epochs >= patience,
        history=state.history,
        fingerprint=schema.fingerprint,
        stopped=state.stopped,
        mmctr_version=mmctr_version(),
    )
    if world.is_main:
        ckpt.write_summary(run, summary.to_dict())
    return summary
