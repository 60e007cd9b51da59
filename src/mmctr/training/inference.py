"""Running a model over data: the device, precision and item table it needs, and its scores.

Training validates with these; evaluate, predict, explain, bench and experiments score with
them, so every score of a model comes from one path.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from tqdm.auto import tqdm

from mmctr.data import ItemTable, Split, iter_batches, num_batches
from mmctr.errors import CheckpointError, ConfigError
from mmctr.model.base import CTRModel
from mmctr.training.metrics import all_metrics


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


def attach_items(model: CTRModel, items: ItemTable, *, held_out: np.ndarray | None = None) -> None:
    """Load the item table into ``model``; ``held_out``: trained ids it reads with the zero id
    row (held out of training, as a run's bundle records them)."""
    model.items.load_item_features(
        torch.from_numpy(items.tags).long(),
        torch.from_numpy(items.emb).float(),
        torch.from_numpy(items.feature_matrix).long(),
    )
    if held_out is not None and len(held_out):
        model.items.mark_new_items(torch.from_numpy(held_out).long())


@torch.inference_mode()
def predict_probs(
    model: CTRModel,
    split: Split,
    batch_size: int,
    *,
    progress: bool = False,
    precision: str = "fp32",
    logits: bool = False,
) -> np.ndarray:
    """Click probabilities (the ``logits`` when asked) for every row of ``split``, in file
    order, on the model's device."""
    model.eval()
    device = model_device(model)
    out = np.empty(len(split), dtype=np.float32)
    start = 0
    batches = iter_batches(split, batch_size)
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
            raw = model(batch.history, batch.target, batch.context).float()
        out[start : start + len(batch)] = (raw if logits else torch.sigmoid(raw)).cpu().numpy()
        start += len(batch)
    return out


def evaluate(
    model: CTRModel, split: Split, batch_size: int, precision: str = "fp32"
) -> dict[str, float]:
    if split.labels is None:
        raise CheckpointError(f"split {split.name!r} has no labels to evaluate against")
    probs = predict_probs(model, split, batch_size, precision=precision)
    return all_metrics(split.users, split.labels, probs)
