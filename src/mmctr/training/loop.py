"""The training loop: Adam, early stopping on valid AUC, learning-rate decay, resumable.

Every source of randomness is reseeded from ``train.seed`` and the epoch number, so a run
killed and resumed from its last checkpoint gives the same weights as one never stopped.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mmctr.config import Config
from mmctr.data import Batch, DataSchema, Dataset, ItemTable, Split, iter_batches, num_batches
from mmctr.errors import CheckpointError, ConfigError
from mmctr.model.base import CTRModel
from mmctr.training import checkpoint as ckpt
from mmctr.training.config import TrainConfig
from mmctr.training.metrics import all_metrics

Log = Callable[[str], None]


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    train_seconds: float
    stopped_early: bool
    history: list[dict[str, Any]]


def resolve_device(name: str) -> torch.device:
    """``auto`` is the GPU when PyTorch sees one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device = {name!r}, but PyTorch sees no CUDA GPU here")
    return device


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """bfloat16 autocast when asked for; a no-op context for fp32."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def model_device(model: CTRModel) -> torch.device:
    return next(iter(model.parameters())).device


def attach_items(model: CTRModel, items: ItemTable) -> None:
    model.items.load_item_features(
        torch.from_numpy(items.tags).long(), torch.from_numpy(items.emb).float()
    )


@torch.inference_mode()
def predict_probs(
    model: CTRModel,
    split: Split,
    batch_size: int,
    *,
    progress: bool = False,
    precision: str = "fp32",
) -> np.ndarray:
    """Click probabilities for every row of ``split``, in file order, on the model's device."""
    model.eval()
    device = model_device(model)
    out = np.empty(len(split), dtype=np.float32)
    start = 0
    batches = iter_batches(split, batch_size, max_len=model.cfg.max_len)
    total = num_batches(split, batch_size)
    for batch in tqdm(
        batches,
        total=total,
        disable=not progress,
        desc=f"predict {split.name}",
        unit="batch",
        leave=False,
    ):
        batch = batch.to(device)
        with autocast(device, precision):
            logits = model(batch.history, batch.target, batch.context)
        out[start : start + len(batch)] = torch.sigmoid(logits.float()).cpu().numpy()
        start += len(batch)
    return out


def evaluate(
    model: CTRModel, split: Split, batch_size: int, precision: str = "fp32"
) -> dict[str, float]:
    if split.labels is None:
        raise CheckpointError(f"split {split.name!r} has no labels to evaluate against")
    probs = predict_probs(model, split, batch_size, precision=precision)
    return all_metrics(split.users, split.labels, probs)


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
) -> FitResult:
    """Train on the train split, stop on valid; leave the best weights in ``model``."""
    tc = config.train
    run = ckpt.RunDir(Path(run_dir))
    progress = sys.stderr.isatty() if progress is None else progress
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    device = resolve_device(tc.device)
    model.to(device)
    attach_items(model, data.items)
    optimizer = make_optimizer(model, tc)
    counters: dict[str, Any] = {
        "epoch": 0,
        "best_auc": -math.inf,
        "best_epoch": -1,
        "bad_epochs": 0,
        "lr": tc.lr,
        "history": [],
        "train_seconds": 0.0,
    }
    if resume and run.state.exists():
        state = ckpt.load(run.state)
        data.schema.check_compatible(
            DataSchema.from_dict(state["schema"]), where=f"{run.state} (resume)"
        )
        model.load_state_dict(state["weights"])
        optimizer.load_state_dict(state["optimizer"])  # moves its state to the params' device
        counters = state["counters"]
        log(f"resuming {run.root} after epoch {counters['epoch']}")
    elif run.has_run():
        raise CheckpointError(
            f"{run.root} already holds a run; pass --resume to continue it or choose another --out"
        )
    run.root.mkdir(parents=True, exist_ok=True)
    ckpt.write_config(run, config)
    train, valid = data["train"], data["valid"]
    steps = num_batches(train, tc.batch_size)
    while counters["epoch"] < tc.epochs and counters["bad_epochs"] < tc.patience:
        epoch = counters["epoch"] + 1
        for group in optimizer.param_groups:
            group["lr"] = counters["lr"]
        t0 = time.perf_counter()
        loss = _train_epoch(model, optimizer, train, config, epoch, steps, progress)
        train_seconds = time.perf_counter() - t0
        metrics = evaluate(model, valid, tc.eval_batch_size, tc.precision)
        improved = metrics["auc"] > counters["best_auc"]
        if improved:
            counters.update(best_auc=metrics["auc"], best_epoch=epoch, bad_epochs=0)
            ckpt.save(
                ckpt.model_payload(model, config, data.schema, epoch=epoch, valid=metrics),
                run.model,
            )
        else:
            counters["bad_epochs"] += 1
            counters["lr"] = max(counters["lr"] * tc.lr_decay, tc.min_lr)
        record = {
            "epoch": epoch,
            "train_loss": loss,
            **{f"valid_{k}": v for k, v in metrics.items()},
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": round(train_seconds, 3),
            "train_samples_per_s": round(len(train) / train_seconds, 1),
            "eval_seconds": round(time.perf_counter() - t0 - train_seconds, 3),
            "improved": improved,
        }
        if device.type == "cuda":
            record["gpu_peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
        counters["history"] = [*counters["history"], record]
        counters["epoch"] = epoch
        counters["train_seconds"] += train_seconds
        ckpt.save(
            {
                "format": ckpt.FORMAT_VERSION,
                "schema": data.schema.to_dict(),
                "weights": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "counters": counters,
            },
            run.state,
        )
        ckpt.write_metrics(run, counters["history"])
        mark = " *" if improved else ""
        log(
            f"epoch {epoch:3d}  loss {loss:.4f}  valid auc {metrics['auc']:.4f}  "
            f"logloss {metrics['logloss']:.4f}  gauc {metrics['gauc']:.4f}  "
            f"{record['train_samples_per_s']:.0f} samples/s{mark}"
        )
    if counters["best_epoch"] < 1:
        raise CheckpointError(f"{run.root}: no epoch finished, so there is no model to keep")
    best = ckpt.load(run.model)
    model.load_state_dict(best["weights"])
    result = FitResult(
        best_epoch=counters["best_epoch"],
        best_valid=best["valid"],
        epochs_run=counters["epoch"],
        train_seconds=counters["train_seconds"],
        stopped_early=counters["bad_epochs"] >= tc.patience,
        history=counters["history"],
    )
    ckpt.write_summary(run, result.__dict__ | {"fingerprint": data.schema.fingerprint})
    return result


def _train_epoch(
    model: CTRModel,
    optimizer: torch.optim.Optimizer,
    train: Split,
    config: Config,
    epoch: int,
    steps: int,
    progress: bool,
) -> float:
    tc = config.train
    model.train()
    torch.manual_seed(tc.seed + epoch)  # dropout draws depend only on (seed, epoch)
    batches = iter_batches(
        train, tc.batch_size, max_len=config.model.max_len, shuffle=True, seed=tc.seed + epoch
    )
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
    # the running loss stays on the device: reading it every step would stall a GPU
    total = torch.zeros((), device=device)
    count, step = 0, 0
    for step, batch in enumerate(bar):
        loss = train_step(model, optimizer, batch.to(device), tc)
        total += loss * len(batch)
        count += len(batch)
        if step % 50 == 0:
            _check_finite(float(total), epoch, step)
            bar.set_postfix(loss=f"{float(total) / count:.4f}")
    mean = float(total) / max(count, 1)
    _check_finite(mean, epoch, step)
    return mean


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
