"""Speed and memory of a config on a data set, measured in one process.

Figures: data load seconds, training and inference samples/s after warm-up, multiply-adds per
sample at the history lengths actually computed, the achieved GFLOP/s next to the machine's
large fp32 matmul GFLOP/s measured in the same run, and peak resident memory.
"""

from __future__ import annotations

import resource
import sys
import time
from itertools import cycle, islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mmctr.config import Config
from mmctr.data import iter_batches, load_dataset
from mmctr.model import SeedCTR, macs_per_sample
from mmctr.model.sequence import trim_history
from mmctr.training.checkpoint import dims_of
from mmctr.training.loop import attach_items


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


def computed_length(model: SeedCTR, history: torch.Tensor) -> int:
    """History positions the model computes for this batch (after its trimming)."""
    if model.sequence is None:
        return 0
    history = history[:, -model.cfg.max_len :]
    if model.cfg.trim_padding and model.cfg.mask == "correct":
        history = trim_history(history, model.cfg.first_k)
    return max(int(history.shape[1]), model.cfg.first_k)


def bench(
    config: Config, data_dir: str | Path, *, batches: int = 20, warmup: int = 3
) -> dict[str, Any]:
    t0 = time.perf_counter()
    data = load_dataset(data_dir, config.data, ("train", "valid"))
    load_seconds = time.perf_counter() - t0
    torch.manual_seed(config.train.seed)
    model = SeedCTR(config.model, dims_of(data.schema))
    attach_items(model, data.items)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.lr)
    max_len = config.model.max_len

    train_batches = list(
        islice(
            iter_batches(
                data["train"], config.train.batch_size, max_len=max_len, shuffle=True, seed=0
            ),
            warmup + batches,
        )
    )
    model.train()
    samples = macs = 0
    for i, batch in enumerate(train_batches):
        if i == warmup:
            start = time.perf_counter()
        assert batch.labels is not None
        loss = F.binary_cross_entropy_with_logits(
            model(batch.history, batch.target, batch.context), batch.labels
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            samples += len(batch)
            macs += (
                len(batch) * macs_per_sample(model, computed_length(model, batch.history))["total"]
            )
    train_seconds = time.perf_counter() - start
    train_flops = 3 * 2 * macs  # backward costs about twice the forward

    model.eval()
    eval_size = config.train.eval_batch_size
    eval_batches = list(
        islice(
            cycle(iter_batches(data["valid"], eval_size, max_len=max_len)), 1 + max(2, batches // 4)
        )
    )
    infer_samples = infer_macs = 0
    with torch.inference_mode():
        model(eval_batches[0].history, eval_batches[0].target, eval_batches[0].context)
        start = time.perf_counter()
        for batch in eval_batches[1:]:
            model(batch.history, batch.target, batch.context)
            infer_samples += len(batch)
            infer_macs += (
                len(batch) * macs_per_sample(model, computed_length(model, batch.history))["total"]
            )
    infer_seconds = time.perf_counter() - start
    peak = matmul_gflops()
    train_gflops = train_flops / train_seconds / 1e9
    infer_gflops = 2 * infer_macs / infer_seconds / 1e9
    return {
        "load_seconds": round(load_seconds, 2),
        "train_rows": len(data["train"]),
        "threads": torch.get_num_threads(),
        "batch_size": config.train.batch_size,
        "train_samples_per_s": round(samples / train_seconds, 1),
        "inference_batch_size": eval_size,
        "inference_samples_per_s": round(infer_samples / infer_seconds, 1),
        "macs_per_sample_computed": round(macs / max(samples, 1)),
        "macs_per_sample_full_length": macs_per_sample(model)["total"],
        "train_gflops": round(train_gflops, 2),
        "inference_gflops": round(infer_gflops, 2),
        "matmul_gflops": round(peak, 2),
        "train_fraction_of_matmul": round(train_gflops / peak, 3),
        "inference_fraction_of_matmul": round(infer_gflops / peak, 3),
        "peak_rss_gb": round(peak_rss_gb(), 3),
    }
