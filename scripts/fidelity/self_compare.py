"""Control for stepwise.py: mmctr against itself, its fast path (trimmed, packed tokens) and its
plain padded path, same weights and batches, dropout off. Both compute the same function in
another order of float operations, so where they part shows how far rounding alone carries two
exact implementations apart. Needs only mmctr."""

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

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "release-small.toml")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--seed", type=int, default=20242025)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    dtype = getattr(torch, a.dtype)
    no_dropout = [
        "model.target_transformer.seq_dropout=0",
        "model.target_transformer.deep_dropout=0",
    ]
    cfg = load_config(CONFIG, [*no_dropout, f"train.seed={a.seed}"])
    data = load_dataset(a.data, cfg.data, ("train",))
    fast = runs.new_model(cfg, data.schema, data.items)
    plain = copy.deepcopy(fast)
    plain.set_execution(PLAIN)
    fast.to(dtype)
    plain.to(dtype)
    opt_f, opt_p = make_optimizer(fast, cfg.train), make_optimizer(plain, cfg.train)
    split = data["train"]
    order = np.random.default_rng(a.seed).permutation(len(split))
    bs, losses = cfg.train.batch_size, []
    for step in range(a.steps):
        start = (step * bs) % (len(split) - bs)
        batch = make_batch(split, order[start : start + bs])
        batch = type(batch)(batch.history, batch.target, batch.context, batch.labels.to(dtype))
        lf = float(train_step(fast, opt_f, batch, cfg.train))
        lp = float(train_step(plain, opt_p, batch, cfg.train))
        losses.append(dict(step=step, fast=lf, plain=lp, rel_diff=abs(lf - lp) / abs(lp)))
        if step % 20 == 0 or step == a.steps - 1:
            print(f"step {step:4d}  fast {lf:.10f}  plain {lp:.10f}  {losses[-1]['rel_diff']:.2e}")
    with open(a.out, "w") as f:
        json.dump(dict(dtype=a.dtype, steps=a.steps, losses=losses), f, indent=1)


if __name__ == "__main__":
    main()
