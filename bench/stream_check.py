"""How fast and in how much memory the train split's batches come, streamed or in memory.

    python bench/stream_check.py --data data/microlens-1m-x10 --streaming
    python bench/stream_check.py --data data/microlens-1m            # the in-memory path

Walks one epoch's batches of the train split exactly as ``mmctr train`` makes them (for
``--ranks N --rank R``, that rank's share), without a model, and prints one JSON object:
rows, steps, seconds to open or read the split, seconds and rows/s of the walk, and the
process's peak resident memory (``ru_maxrss``). Run it as a process of its own: the peak
covers everything the process did.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from mmctr.config import load_config
from mmctr.data import StreamingSplit, load_dataset
from mmctr.runtime import keep_freed_memory
from mmctr.training.distributed import World
from mmctr.training.epoch import share_batches


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--config", default="cpu")
    p.add_argument("--streaming", action="store_true", help="stream the train split")
    p.add_argument("--batch", type=int, default=0, help="global batch (default: the config's)")
    p.add_argument("--ranks", type=int, default=1)
    p.add_argument("--rank", type=int, default=0)
    args = p.parse_args(argv)
    keep_freed_memory()
    config = load_config(args.config, [f"data.streaming={str(args.streaming).lower()}"])
    batch = args.batch or config.train.batch_size
    world = World(rank=args.rank, size=args.ranks)
    t0 = time.perf_counter()
    data = load_dataset(args.data, config.data, ("train",), stream_train=True)
    train = data.rows("train")
    opened = time.perf_counter() - t0
    if isinstance(train, StreamingSplit):
        plan = train.epoch(batch, config.train.seed + 1, world)
    else:
        plan = share_batches(train, batch, config.train.seed + 1, world)
    t0 = time.perf_counter()
    rows = steps = 0
    for _, mine, _ in plan:
        rows += mine
        steps += 1
    walk = time.perf_counter() - t0
    print(json.dumps({
        "data": args.data, "streaming": args.streaming, "rank": args.rank, "ranks": args.ranks,
        "batch": batch, "rows": rows, "steps": steps, "open_seconds": round(opened, 2),
        "walk_seconds": round(walk, 2), "rows_per_s": round(rows / walk),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
