"""A training process for the data-parallel tests: ``fit`` in float64 without dropout.

Run alone (a world of one) or under torchrun: ``WORKER DATA CONFIG OUT [--resume]
[--kill-rank R --kill-at-step N [--raise-instead]]``. With a kill it SIGKILLs rank R at its
N-th training step (counted over the whole run), as a crashed machine would, or raises there.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
from pathlib import Path

import torch

from mmctr.config import load_config
from mmctr.data import load_dataset
from mmctr.training import checkpoint as ckpt
from mmctr.training import distributed
from mmctr.training import epoch as epochs
from mmctr.training import run as runs
from mmctr.training.lock import run_lock
from mmctr.training.loop import fit

NO_DROPOUT = [
    "model.target_transformer.seq_dropout=0",
    "model.target_transformer.deep_dropout=0",
    "train.device=cpu",
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("config")
    p.add_argument("out")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--resume", action="store_true")
    p.add_argument("--kill-rank", type=int, default=-1)
    p.add_argument("--kill-at-step", type=int, default=0)
    p.add_argument("--raise-instead", action="store_true", help="raise, not SIGKILL")
    args = p.parse_args()
    torch.set_num_threads(1)
    world = distributed.join_from_env("cpu")
    if world.rank == args.kill_rank:
        real_step, count = epochs.train_step, [0]

        def step(*a, **k):  # type: ignore[no-untyped-def]
            count[0] += 1
            if count[0] == args.kill_at_step:
                if args.raise_instead:
                    raise FloatingPointError(f"planted failure on rank {world.rank}")
                os.kill(os.getpid(), signal.SIGKILL)
            return real_step(*a, **k)

        epochs.train_step = step  # type: ignore[assignment]
    config = load_config(args.config, [*NO_DROPOUT, *args.set])
    data = load_dataset(args.data, config.data, ("train", "valid"))
    run = ckpt.RunDir(Path(args.out))
    fresh = not (args.resume and run.state.exists())
    model = runs.new_model(config, data.schema, data.items, fit=fresh).double()
    # as runs.train does, but for the float64 model: rank 0 locks and checks the run folder
    with run_lock(run.root) if world.is_main else contextlib.nullcontext():
        runs.check_can_start(run.root, resume=args.resume)
        fit(model, data, config, run, resume=args.resume, progress=False, log=lambda _: None)
    distributed.leave()


if __name__ == "__main__":
    main()
