"""One epoch of training and one scoring of the valid split, alone or across ranks.

Alone, an epoch walks ``train`` in the epoch's seeded order in batches of ``train.batch_size``.
Across ranks (``distributed.World``) every rank walks the same order and takes its share of
each batch; its loss is weighted so that DistributedDataParallel's average of the ranks'
gradients is the gradient of the whole batch's mean loss, exactly as one process computes it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from mmctr.config.train import TrainConfig
from mmctr.data import (
    Batch,
    Split,
    StreamingSplit,
    make_batch,
    num_batches,
    order_batches,
)
from mmctr.model.base import CTRModel
from mmctr.training.distributed import World
from mmctr.training.inference import autocast, evaluate, predict_probs
from mmctr.training.metrics import all_metrics

# dropout seeds of rank r are offset by r times this, so ranks draw different masks while
# rank 0 draws what a single process draws
RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class EpochLoss:
    mean: float  # over rows (of all ranks)
    steps: torch.Tensor  # (steps,) each step's mean loss, on the model's device


def train_epoch(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    train: Split | StreamingSplit,
    tc: TrainConfig,
    epoch: int,
    progress: bool,
    world: World,
) -> EpochLoss:
    """One pass over ``train`` in the epoch's seeded order. ``net`` is the model, or its
    DistributedDataParallel wrapper across ranks. The losses stay on the model's device until
    the epoch ends: reading them every step would stall a GPU."""
    net.train()
    torch.manual_seed(tc.seed + epoch + RANK_SEED_STRIDE * world.rank)  # (seed, epoch, rank)
    if isinstance(train, StreamingSplit):
        steps = train.steps(tc.batch_size)
        plan = train.epoch(tc.batch_size, tc.seed + epoch, world)
    else:
        steps = num_batches(train, tc.batch_size)
        plan = share_batches(train, tc.batch_size, tc.seed + epoch, world)
    bar = tqdm(plan, total=steps, disable=not progress, desc=f"epoch {epoch}", unit="batch",
               leave=False, mininterval=0.5)  # fmt: skip
    device = next(iter(net.parameters())).device
    sums = torch.zeros(2, steps, device=device)  # per step: loss summed over rows, rows
    total = torch.zeros((), device=device)
    count, step = 0, 0
    for step, (batch, mine, rows) in enumerate(bar):
        weight = world.size * mine / rows
        loss = train_step(net, optimizer, batch.to(device), tc, weight=weight)
        sums[0, step] = loss * mine
        sums[1, step] = mine
        total += loss * mine
        count += mine
        if step % 50 == 0:
            _check_finite(float(total) / max(count, 1), epoch, step)
            bar.set_postfix(loss=f"{float(total) / max(count, 1):.4f}")
    world.sum(sums)
    mean = float(sums[0].sum()) / max(float(sums[1].sum()), 1.0)
    _check_finite(mean, epoch, step)
    return EpochLoss(mean, sums[0] / sums[1].clamp(min=1))


def share_batches(
    train: Split, batch_size: int, seed: int, world: World
) -> Iterator[tuple[Batch, int, int]]:
    """Each step's (this rank's share of the batch, its rows, the batch's rows): the batches of
    one seeded permutation, the same on every rank."""
    for rows in order_batches(len(train), batch_size, seed=seed):
        mine = rows[world.share(len(rows))]
        # a rank without rows in a short last batch still steps (DDP needs every rank's
        # gradients), on one row weighted zero
        yield make_batch(train, mine if len(mine) else rows[:1]), len(mine), len(rows)


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    tc: TrainConfig,
    *,
    weight: float = 1.0,
) -> torch.Tensor:
    """One update: forward, binary cross-entropy, backward, the embedding regulariser's
    gradient (``train.embedding_reg``), clip, Adam. Returns the loss (without the penalty).

    The gradient is that of ``weight`` times the batch's mean loss (1 alone; across ranks, the
    share that makes the ranks' average the whole batch's). The batch must be on the model's
    device; the returned loss is the batch's mean, detached, and stays there.
    """
    assert batch.labels is not None
    with autocast(batch.history.device, tc.precision):
        logits = model(batch.history, batch.target, batch.context)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32 loss
    loss = F.binary_cross_entropy_with_logits(logits, batch.labels.to(logits.dtype))
    optimizer.zero_grad(set_to_none=True)
    (loss * weight if weight != 1.0 else loss).backward()
    if tc.embedding_reg:
        add_embedding_penalty(model, tc.embedding_reg)
    if tc.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    optimizer.step()
    return loss.detach()


@torch.no_grad()
def add_embedding_penalty(model: torch.nn.Module, reg: float) -> None:
    """Add the gradient of ``(reg / 2) |P|^2`` over the item and context encoders' parameters
    (FuxiCTR's embedding regulariser, which QIN's release sets) to theirs, before clipping, as
    a penalty in the loss would be clipped with it. Across ranks the gradients are already
    averaged here, and every rank adds the same term."""
    inner = getattr(model, "module", model)  # DistributedDataParallel keeps it as .module
    for part in ("items", "context"):
        for param in inner.get_submodule(part).parameters():
            if param.grad is None:  # no row of the batch reached it: the penalty still does
                param.grad = param.detach() * reg
            else:
                param.grad.add_(param, alpha=reg)


def score_valid(
    model: CTRModel, valid: Split, batch_size: int, precision: str, world: World
) -> dict[str, float]:
    """AUC, logloss and gAUC of the whole ``valid`` split: across ranks each scores its share
    and every rank computes the metrics from all the predictions, so all decide alike."""
    if not world.active:
        return evaluate(model, valid, batch_size, precision)
    assert valid.labels is not None
    mine = predict_probs(model, valid.take(world.share(len(valid))), batch_size,
                         precision=precision)  # fmt: skip
    probs = world.gather(np.asarray(mine))
    return all_metrics(valid.users, valid.labels, probs)


def _check_finite(value: float, epoch: int, step: int) -> None:
    if not math.isfinite(value):
        raise FloatingPointError(f"epoch {epoch} step {step}: loss is {value}; lower train.lr")
