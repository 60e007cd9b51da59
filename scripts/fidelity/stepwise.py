"""The release and mmctr from the same initial weights, fed the same rows each step through
each side's own data path, dropout off: the training loss of both after every step."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import numpy as np
import oracle
import torch
import torch.nn.functional as F
from torch import nn

from mmctr.config import load_config
from mmctr.data import load_dataset, make_batch
from mmctr.training import run as runs
from mmctr.training.epoch import train_step
from mmctr.training.loop import make_optimizer

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "release-small.toml")


class InWeightDtype(nn.Module):
    """The release casts the frozen embedding to float32; feed its Linear in its own dtype."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.to(self.linear.weight.dtype))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    ap.add_argument("--mask", choices=["correct", "released"], default="correct")
    ap.add_argument("--fused", type=int, default=1, help="mmctr's fused Adam (1) or not (0)")
    ap.add_argument("--seed", type=int, default=20242025)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default="/tmp/mmctr-oracle")
    ap.add_argument("--out", required=True)
    return ap.parse_args()


@dataclass
class Pair:
    """The release and mmctr, same initial weights, in one dtype, each with its optimiser."""

    params: dict[str, Any]
    fmap: Any
    rel: Any
    mm: nn.Module
    opt: torch.optim.Optimizer
    cfg: Any
    data: Any
    pairs: list[tuple[torch.Tensor, torch.Tensor]]


def build_pair(a: argparse.Namespace, dtype: torch.dtype) -> Pair:
    oracle.set_mask(a.mask)
    params = oracle.params_for(
        a.data, a.work, a.seed, transformer_dropout=0.0, net_dropout=0.0, batch_size=a.batch
    )
    torch.manual_seed(a.seed)
    fmap, rel = oracle.build(params)
    rel._max_gradient_norm, rel._batch_index = params["max_gradient_norm"], 0
    overrides = [
        "model.target_transformer.seq_dropout=0",
        "model.target_transformer.deep_dropout=0",
        f"model.target_transformer.mask={a.mask}",
        f"train.batch_size={a.batch}",
        f"train.fused_adam={'true' if a.fused else 'false'}",
    ]
    cfg = load_config(CONFIG, overrides)
    data = load_dataset(a.data, cfg.data, ("train",))
    mm = runs.new_model(cfg, data.schema, data.items)  # its weights are the release's, below
    pairs = oracle.weight_pairs(rel, mm)
    with torch.no_grad():
        for src, dst in pairs:
            dst.copy_(src)
    encoders = rel.embedding_layer.embedding_layer.feature_encoders
    encoders["item_emb_d128"] = InWeightDtype(encoders["item_emb_d128"])
    rel.to(dtype)
    mm.to(dtype)
    rel.get_labels = lambda inputs: inputs[0]["label"].to(dtype).view(-1, 1)
    # each side's optimiser, built on its parameters after the dtype change
    rel.optimizer = torch.optim.Adam(rel.parameters(), lr=params["learning_rate"])
    opt = make_optimizer(mm, cfg.train)
    rel.train()
    mm.train()
    return Pair(params, fmap, rel, mm, opt, cfg, data, pairs)


def check_same_rows(step: int, rb: Any, mb: Any, n: int) -> None:
    """Both data paths gave the same histories, targets, context and labels.

    The release's loader cuts each history to its last ``max_len`` items; mmctr's batch keeps
    the stored width (100 on MicroLens-50k) and the model reads the last ``max_len`` columns.
    """
    items = rb[1]["item_id"].view(n, -1)
    width = items.shape[1] - 1
    assert torch.equal(items[:, :-1], mb.history[:, -width:]), f"step {step}: histories differ"
    assert torch.equal(items[:, -1], mb.target), f"step {step}: targets differ"
    assert torch.equal(rb[0]["likes_level"].long(), mb.context[:, 0])
    assert torch.equal(rb[0]["views_level"].long(), mb.context[:, 1])
    assert mb.labels is not None and torch.equal(rb[0]["label"].float(), mb.labels)


def parting_rows(
    seen: dict[str, torch.Tensor], mb: Any, rows: np.ndarray, dtype: torch.dtype
) -> list[dict[str, Any]]:
    """Where the losses part: the three rows whose losses differ most, and their outputs."""
    y = mb.labels.to(dtype)
    row_r = F.binary_cross_entropy(seen["prob"].view(-1), y, reduction="none")
    row_m = F.binary_cross_entropy_with_logits(seen["logit"], y, reduction="none")
    worst = torch.argsort((row_r - row_m).abs(), descending=True)[:3].tolist()
    return [
        dict(
            row=int(rows[i]),
            label=float(y[i]),
            mmctr_logit=float(seen["logit"][i]),
            release_prob=float(seen["prob"].view(-1)[i]),
            release_loss=float(row_r[i]),
            mmctr_loss=float(row_m[i]),
        )
        for i in worst
    ]


def run_steps(
    a: argparse.Namespace, p: Pair, dtype: torch.dtype
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], float]:
    """Train both sides ``a.steps`` steps on the same rows: (losses, parted, start time)."""
    rows_of = oracle.loader.ParquetDataset(p.params["train_data"])
    collate = oracle.loader.BatchCollator(
        p.fmap, p.params["max_len"], rows_of.column_index, p.params["item_info"]
    )
    split = p.data["train"]
    order = np.random.default_rng(a.seed).permutation(len(split))
    # each side's batch output, caught inside its own training step
    seen: dict[str, torch.Tensor] = {}
    # (the release's train_step calls forward() directly, so hook its last block, which ends in
    # the sigmoid)
    p.rel.mlp.register_forward_hook(lambda m, i, out: seen.update(prob=out.detach()))
    p.mm.register_forward_hook(lambda m, i, out: seen.update(logit=out.detach()))
    losses: list[dict[str, Any]] = []
    parted: list[dict[str, Any]] = []
    t0 = time.time()
    for step in range(a.steps):
        start = (step * a.batch) % (len(split) - a.batch)  # wraps round after one epoch
        rows = order[start : start + a.batch]
        rb = collate([rows_of[i] for i in rows])  # the release's own data path
        mb = make_batch(split, rows)  # mmctr's
        check_same_rows(step, rb, mb, len(rows))
        loss_r = float(p.rel.train_step(rb).detach())
        loss_m = float(train_step(p.mm, p.opt, mb, p.cfg.train))
        diff = abs(loss_r - loss_m) / abs(loss_r)
        losses.append(dict(step=step, release=loss_r, mmctr=loss_m, rel_diff=diff))
        if diff > 1e-6:  # where they part: the rows whose losses differ, and their logits
            rows_info = parting_rows(seen, mb, rows, dtype)
            parted.append(dict(step=step, rows=rows_info))
            print(f"step {step}: losses part; rows {json.dumps(rows_info)}")
        if step % 20 == 0 or step == a.steps - 1:
            print(f"step {step:4d}  release {loss_r:.10f}  mmctr {loss_m:.10f}  {diff:.2e}")
    return losses, parted, t0


def main() -> None:
    a = parse_args()
    torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    p = build_pair(a, dtype)
    losses, parted, t0 = run_steps(a, p, dtype)
    pairs = p.pairs
    params_diff = max(float((s - d).abs().max() / s.abs().max().clamp(min=1e-30)) for s, d in pairs)
    result = dict(
        dtype=a.dtype,
        mask=a.mask,
        fused_adam=bool(a.fused),
        batch=a.batch,
        steps=a.steps,
        tensors=len(pairs),
        parameters=sum(d.numel() for _, d in pairs),
        max_rel_loss_diff=max(x["rel_diff"] for x in losses),
        max_rel_weight_diff_after=params_diff,
        seconds=round(time.time() - t0, 1),
        parted=parted,
        losses=losses,
    )
    print(json.dumps({k: v for k, v in result.items() if k not in ("losses", "parted")}))
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
