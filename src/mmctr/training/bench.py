"""Speed and memory of a config on a data set, measured in one process.

Figures: data load seconds, training and inference samples/s after warm-up, useful
multiply-adds per sample (each row at its real history length), the achieved useful GFLOP/s
next to the machine's large fp32 matmul GFLOP/s measured in the same run, and peak resident
memory. ``baseline=True`` measures the plain path as well (every row through all ``max_len``
positions, no packing, the per-tensor Adam) on the same batches, so that the speed-ups are
ratios from one run.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import replace
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from mmctr.config import Config
from mmctr.config.train import TrainConfig
from mmctr.data import Batch, Dataset, Split, iter_batches, load_dataset
from mmctr.errors import ConfigError
from mmctr.model import CTRModel, build_model, macs_per_sample
from mmctr.model.cost import reads_history
from mmctr.training.checkpoint import dims_of
from mmctr.training.inference import attach_items
from mmctr.training.loop import make_optimizer


def peak_rss_gb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / (1024**3 if sys.platform == "darwin" else 1024**2)


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of a large square matmul: the machine's practical ceiling."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def useful_macs(model: CTRModel, batch: Batch) -> int:
    """Multiply-adds the batch needs if each row is computed at its real history length."""
    if not reads_history(model):
        return len(batch) * macs_per_sample(model, 0)["total"]
    window = model.window(batch.history)
    lengths = window.ne(0).sum(1).numpy()
    values, counts = np.unique(lengths, return_counts=True)
    return int(
        sum(
            c * macs_per_sample(model, int(v))["total"] for v, c in zip(values, counts, strict=True)
        )
    )


def _timed_training(
    model: CTRModel, batches: list[Batch], warmup: int, train: TrainConfig
) -> float:
    optimizer = make_optimizer(model, train)
    model.train()
    start = time.perf_counter()
    for i, batch in enumerate(batches):
        if i == warmup:
            start = time.perf_counter()
        assert batch.labels is not None
        loss = F.binary_cross_entropy_with_logits(
            model(batch.history, batch.target, batch.context), batch.labels
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


@torch.inference_mode()
def _timed_inference(model: CTRModel, batches: list[Batch]) -> float:
    model.eval()
    model(batches[0].history, batches[0].target, batches[0].context)  # warm-up
    start = time.perf_counter()
    for batch in batches[1:]:
        model(batch.history, batch.target, batch.context)
    return time.perf_counter() - start


def _measure(
    config: Config, data: Dataset, train: list[Batch], infer: list[Batch], warmup: int
) -> dict[str, float]:
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, dims_of(data.schema))
    attach_items(model, data.items)
    train_s = _timed_training(model, train, warmup, config.train)
    infer_s = _timed_inference(model, infer)
    timed_train, timed_infer = train[warmup:], infer[1:]
    train_rows = sum(len(b) for b in timed_train)
    infer_rows = sum(len(b) for b in timed_infer)
    train_macs = sum(useful_macs(model, b) for b in timed_train)
    infer_macs = sum(useful_macs(model, b) for b in timed_infer)
    return {
        "train_samples_per_s": train_rows / train_s,
        "inference_samples_per_s": infer_rows / infer_s,
        "useful_macs_per_sample": train_macs / train_rows,
        "train_gflops": 3 * 2 * train_macs / train_s / 1e9,  # backward ~ twice the forward
        "inference_gflops": 2 * infer_macs / infer_s / 1e9,
    }


def bench(
    config: Config,
    data_dir: str | Path,
    *,
    batches: int = 20,
    warmup: int = 3,
    baseline: bool = False,
    min_history: int = 0,
) -> dict[str, Any]:
    """``min_history``: time only the train rows with at least that many history items (e.g.
    ``max_len``, so that every row reads the model's whole window, as a service scoring long
    histories does); 0 times the rows as they come."""
    t0 = time.perf_counter()
    data = load_dataset(data_dir, config.data, ("train", "valid"))
    load_seconds = time.perf_counter() - t0
    rows = _rows_with_history(data["train"], min_history)
    train = list(
        islice(
            cycle(iter_batches(rows, config.train.batch_size, shuffle=True, seed=0)),
            warmup + batches,
        )
    )
    infer = list(
        islice(cycle(iter_batches(rows, config.train.eval_batch_size)), 1 + max(2, batches // 4))
    )
    fast = _measure(config, data, train, infer, warmup)
    peak = matmul_gflops()
    out: dict[str, Any] = {
        "load_seconds": round(load_seconds, 2),
        "train_rows": len(data["train"]),
        "min_history": min_history,
        "timed_from_rows": len(rows),
        "threads": torch.get_num_threads(),
        "batch_size": config.train.batch_size,
        "inference_batch_size": config.train.eval_batch_size,
        "full_length_macs_per_sample": macs_per_sample(_meta_model(config, data))["total"],
        **{k: round(v, 2) for k, v in fast.items()},
        "matmul_gflops": round(peak, 1),
        "mfu": round(fast["train_gflops"] / peak, 3),
        "inference_mfu": round(fast["inference_gflops"] / peak, 3),
    }
    if baseline:
        plain_model = replace(config.model, trim_padding=False, pack_tokens=False)
        plain_train = replace(config.train, fused_adam=False)
        plain_config = replace(config, model=plain_model, train=plain_train)
        plain = _measure(plain_config, data, train, infer, warmup)
        out["baseline"] = {k: round(v, 2) for k, v in plain.items()}
        out["train_speedup"] = round(fast["train_samples_per_s"] / plain["train_samples_per_s"], 2)
        out["inference_speedup"] = round(
            fast["inference_samples_per_s"] / plain["inference_samples_per_s"], 2
        )
    out["peak_rss_gb"] = round(peak_rss_gb(), 3)
    return out


def _rows_with_history(split: Split, min_history: int) -> Split:
    """The rows of ``split`` whose stored history has at least ``min_history`` items."""
    if min_history <= 0:
        return split
    keep = np.flatnonzero((split.history != 0).sum(1) >= min_history)
    if len(keep) == 0:
        raise ConfigError(
            f"--min-history {min_history}: no {split.name} row has that many history items "
            f"(the longest stored history has {int((split.history != 0).sum(1).max())})"
        )
    labels = None if split.labels is None else split.labels[keep]
    return replace(
        split,
        users=split.users[keep],
        history=split.history[keep],
        target=split.target[keep],
        context=split.context[keep],
        labels=labels,
    )


def _meta_model(config: Config, data: Dataset) -> CTRModel:
    with torch.device("meta"):
        return build_model(config.model, dims_of(data.schema))
