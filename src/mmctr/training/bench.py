"""Speed and memory of a config on a data set, measured in one process.

Figures: data load seconds, training and inference samples/s after warm-up, useful
multiply-adds per sample (each row at its real history length), the achieved useful GFLOP/s
next to the machine's large fp32 matmul GFLOP/s measured in the same run, and peak resident
memory. ``baseline=True`` measures the plain path as well (every row through all ``max_len``
positions, no packing, the per-tensor Adam) on the same batches, so that the speed-ups are
ratios from one run.
"""

from __future__ import annotations

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
from mmctr.model import PLAIN, CTRModel, build_model, macs_per_sample, parameter_counts
from mmctr.runtime import peak_rss_gb
from mmctr.training import run as runs
from mmctr.training.inference import autocast
from mmctr.training.loop import make_optimizer
from mmctr.training.precision import for_inference, resolve_precision

CPU = torch.device("cpu")  # bench times the CPU


def matmul_gflops(size: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of a large square matmul in ``dtype``: the machine's practical ceiling."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def useful_macs(model: CTRModel, batch: Batch) -> int:
    """Multiply-adds the batch needs if each row is computed at its real history length."""
    if not model.reads_history:
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
        with autocast(CPU, train.precision):
            logits = model(batch.history, batch.target, batch.context)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


@torch.inference_mode()
def _timed_inference(model: CTRModel, batches: list[Batch], precision: str) -> float:
    """Scoring as ``predict --precision`` does it: bf16 converts the weights once (no casts
    per batch); the model is not trained afterwards."""
    model = for_inference(model.eval(), precision)
    model(batches[0].history, batches[0].target, batches[0].context)  # warm-up
    start = time.perf_counter()
    for batch in batches[1:]:
        model(batch.history, batch.target, batch.context)
    return time.perf_counter() - start


def _measure(
    config: Config,
    data: Dataset,
    train: list[Batch],
    infer: list[Batch],
    warmup: int,
    plain: bool = False,
) -> dict[str, float]:
    """Time ``config``'s model on the batches; ``plain``: on its plain path (``PLAIN``)."""
    model = runs.new_model(config, data.schema, data.items)
    if plain:
        model.set_execution(PLAIN)
    train_s = _timed_training(model, train, warmup, config.train)
    infer_s = _timed_inference(model, infer, config.train.precision)
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
    compare_bf16: bool = False,
) -> dict[str, Any]:
    """``min_history``: time only the train rows with at least that many history items (e.g.
    ``max_len``, so that every row reads the model's whole window, as a service scoring long
    histories does); 0 times the rows as they come. ``train.precision`` is honoured (``auto``
    resolved for this CPU); ``compare_bf16`` also times bf16 autocast on the same batches."""
    precision, why = resolve_precision(config.train.precision, CPU)
    config = replace(config, train=replace(config.train, precision=precision))
    t0 = time.perf_counter()
    data = load_dataset(data_dir, config.data, ("train", "valid"))
    load_seconds = time.perf_counter() - t0
    rows = _rows_with_history(data["train"], min_history)
    train, infer = _timed_batches(rows, config, batches, warmup)
    fast = _measure(config, data, train, infer, warmup)
    peaks = {"fp32": matmul_gflops(), "bf16": matmul_gflops(dtype=torch.bfloat16)}
    out: dict[str, Any] = {
        "load_seconds": round(load_seconds, 2),
        "train_rows": len(data["train"]),
        "min_history": min_history,
        "warmup_batches": warmup,
        "timed_batches": batches,
        "timed_from_rows": len(rows),
        "threads": torch.get_num_threads(),
        "precision": precision,
        "precision_reason": why,
        "batch_size": config.train.batch_size,
        "inference_batch_size": config.train.eval_batch_size,
        "full_length_macs_per_sample": macs_per_sample(_meta_model(config, data))["total"],
        **{k: round(v, 2) for k, v in fast.items()},
        "matmul_gflops": round(peaks["fp32"], 1),
        "matmul_gflops_bf16": round(peaks["bf16"], 1),
        # the share of the matmul rate of the precision in use
        "mfu": round(fast["train_gflops"] / peaks[precision], 3),
        "inference_mfu": round(fast["inference_gflops"] / peaks[precision], 3),
    }
    if baseline:
        plain_train = replace(config.train, fused_adam=False)
        plain = _measure(replace(config, train=plain_train), data, train, infer, warmup, True)
        out["baseline"] = {k: round(v, 2) for k, v in plain.items()}
        out.update(_speedups("", fast, plain))
    if compare_bf16 and precision != "bf16":
        half = _measure(replace(config, train=replace(config.train, precision="bf16")), data,
                        train, infer, warmup)  # fmt: skip
        out["bf16"] = {k: round(v, 2) for k, v in half.items()}
        out["bf16"]["mfu"] = round(half["train_gflops"] / peaks["bf16"], 3)
        out["bf16"]["inference_mfu"] = round(half["inference_gflops"] / peaks["bf16"], 3)
        out.update(_speedups("bf16_", half, fast))
    peak = peak_rss_gb()
    out["peak_rss_gb"] = None if peak is None else round(peak, 3)  # None: not on Windows
    return out


def _timed_batches(
    rows: Split, config: Config, batches: int, warmup: int
) -> tuple[list[Batch], list[Batch]]:
    """Training batches (warm-up first) and inference batches (one warm-up) of ``rows``."""
    train = cycle(iter_batches(rows, config.train.batch_size, shuffle=True, seed=0))
    infer = cycle(iter_batches(rows, config.train.eval_batch_size))
    return list(islice(train, warmup + batches)), list(islice(infer, 1 + max(2, batches // 4)))


def _speedups(prefix: str, fast: dict[str, float], slow: dict[str, float]) -> dict[str, float]:
    return {
        f"{prefix}{kind}_speedup": round(
            fast[f"{kind}_samples_per_s"] / slow[f"{kind}_samples_per_s"], 2
        )
        for kind in ("train", "inference")
    }


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
    return split.take(keep)


def _meta_model(config: Config, data: Dataset) -> CTRModel:
    with torch.device("meta"):  # sizes only: no memory, no initialisation cost
        return build_model(config.model, data.schema.dims)


def model_size(config: Config, data_dir: str | Path) -> dict[str, Any]:
    """Parameters by part and forward multiply-adds per sample of ``config`` on the data's
    vocabularies (``mmctr describe``)."""
    model = _meta_model(config, load_dataset(data_dir, config.data, ()))
    macs = macs_per_sample(model)
    return {
        "parameters": parameter_counts(model),
        "macs_per_sample": macs["total"],
        "macs_by_part": macs,
    }
