"""Control for qin_stepwise.py: mmctr's QIN against itself, its fast path (trimmed, packed
tokens) and its plain padded path, same weights and the same batches, dropout off. Both compute
the same function in another order of float operations, so how fast they part shows how far
rounding alone carries two exact implementations of QIN apart. Needs only mmctr."""

from __future__ import annotations

import argparse
import copy
import json
import os

import numpy as np
import torch

from mmctr.config import load_config
from mmctr.data import load_dataset, make_batch
from mmctr.model import PLAIN
from mmctr.training import run as runs
from mmctr.training.epoch import train_step
from mmctr.training.loop import make_optimizer

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "qin-cpu.toml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    ap.add_argument("--reg", type=float, default=0.0, help="train.embedding_reg")
    ap.add_argument("--mm-dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=20242025)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, a.dtype)
    overrides = [
        "model.qin.dropout=0",
        f"model.mm_dim={a.mm_dim}",
        f"train.seed={a.seed}",
        f"train.batch_size={a.batch}",
        f"train.embedding_reg={a.reg}",
    ]
    cfg = load_config(CONFIG, overrides)
    data = load_dataset(a.data, cfg.data, ("train",))
    fast = runs.new_model(cfg, data.schema, data.items)
    plain = copy.deepcopy(fast)
    plain.set_execution(PLAIN)
    fast.to(dtype)
    plain.to(dtype)
    opt_f, opt_p = make_optimizer(fast, cfg.train), make_optimizer(plain, cfg.train)
    split = data["train"]
    order = np.random.default_rng(a.seed).permutation(len(split))
    losses = []
    for step in range(a.steps):
        start = (step * a.batch) % (len(split) - a.batch)
        batch = make_batch(split, order[start : start + a.batch])
        batch = type(batch)(batch.history, batch.target, batch.context, batch.labels.to(dtype))
        lf = float(train_step(fast, opt_f, batch, cfg.train))
        lp = float(train_step(plain, opt_p, batch, cfg.train))
        losses.append(dict(step=step, fast=lf, plain=lp, rel_diff=abs(lf - lp) / abs(lp)))
        if step % 20 == 0 or step == a.steps - 1:
            print(f"step {step:4d}  fast {lf:.10f}  plain {lp:.10f}  {losses[-1]['rel_diff']:.2e}")
    with open(a.out, "w") as f:
        json.dump(
            dict(dtype=a.dtype, batch=a.batch, reg=a.reg, steps=a.steps, losses=losses), f, indent=1
        )


if __name__ == "__main__":
    main()
