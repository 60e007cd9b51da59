"""How far bf16 and int8 scoring move a trained run's predictions from fp32, on one split.

    python bench/precision_check.py --run runs/demo --data data/demo --split test

Scores the split with the run loaded at each precision (``mmctr.load_run(..., precision=)``)
and prints one JSON object: rows, for each precision its AUC / logloss / gAUC when the split
has labels, the max and mean absolute difference of its probabilities from fp32, its AUC
difference from fp32, and the seconds it took to score the split (one pass, after a warm-up
batch, on this process's torch threads).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

import mmctr
from mmctr.runtime import keep_freed_memory
from mmctr.training.metrics import all_metrics

PRECISIONS = ("fp32", "bf16", "int8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--rows", type=int, default=0, help="score only the first N rows (0: all)")
    args = p.parse_args(argv)
    keep_freed_memory()
    out: dict[str, object] = {"run": args.run, "split": args.split}
    reference: np.ndarray | None = None
    for precision in PRECISIONS:
        scorer = mmctr.load_run(args.run, args.data, device="cpu", precision=precision)
        split = scorer.split(args.split)
        if args.rows:
            split = _head(split, args.rows)
        scorer.predict(_head(split, 256))  # warm-up
        start = time.perf_counter()
        probs = scorer.predict(split)
        row: dict[str, float] = {"seconds": round(time.perf_counter() - start, 2)}
        if split.labels is not None:
            metrics = all_metrics(split.users, split.labels, probs)
            row |= {k: round(v, 5) for k, v in metrics.items()}
        if reference is None:
            reference = probs
            out["rows"] = len(split)
        else:
            diff = np.abs(probs.astype(np.float64) - reference)
            row |= {"max_abs_diff": float(f"{diff.max():.3g}"),
                    "mean_abs_diff": float(f"{diff.mean():.3g}")}  # fmt: skip
            fp32 = out["fp32"]
            if "auc" in row and isinstance(fp32, dict):
                row["auc_diff"] = round(row["auc"] - fp32["auc"], 5)
        out[precision] = row
    print(json.dumps(out, indent=2))
    return 0


def _head(split: mmctr.data.Split, n: int) -> mmctr.data.Split:
    return split.take(slice(0, min(n, len(split))))


if __name__ == "__main__":
    sys.exit(main())
