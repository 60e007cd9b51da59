"""Exported graphs against `mmctr predict`: parity on a whole split, file sizes, single-thread
inference speed. The figures in docs/serving.md (section Export) come from this script.

    mmctr export --run R --data DATA --format onnx --out R.onnx
    mmctr export --run R --data DATA --format torchscript --out R.pt
    OMP_NUM_THREADS=1 PYTHONPATH=src python bench/export_check.py --run R --data DATA \
        --onnx R.onnx --torchscript R.pt

Speed: rows/s over the whole split at --batch rows a call, one thread everywhere (torch's
intra-op pool and onnxruntime's), after one warm-up batch; a one-off timing on a shared
machine, not a benchmark with repeats. "torch predict" is the model as `mmctr predict` runs
it, trimming and token packing on; "torch full width" is the same model in eager torch on the
exported graphs' fixed layout (both switched off).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import mmctr
from mmctr.export import fit_history

Score = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def timed(score: Score, h: np.ndarray, t: np.ndarray, c: np.ndarray, batch: int) -> tuple:
    """All rows through ``score`` in batches: (probabilities, rows per second)."""
    score(h[:batch], t[:batch], c[:batch])  # warm-up
    parts = []
    t0 = time.perf_counter()
    for s in range(0, len(t), batch):
        parts.append(score(h[s : s + batch], t[s : s + batch], c[s : s + batch]))
    seconds = time.perf_counter() - t0
    return np.concatenate(parts), len(t) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--split", default="valid")
    ap.add_argument("--onnx", type=Path)
    ap.add_argument("--torchscript", type=Path)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    scorer = mmctr.load_run(args.run, args.data, device="cpu")
    split = scorer.split(args.split)
    expected = scorer.predict(split)
    stored = np.ascontiguousarray(split.history, dtype=np.int64)
    h = fit_history(scorer.model, stored)
    t, c = split.target.astype(np.int64), split.context.astype(np.int64)
    report: dict = {"run": args.run, "split": args.split, "rows": len(t), "batch": args.batch}

    def eager(hh: np.ndarray, tt: np.ndarray, cc: np.ndarray) -> np.ndarray:
        return scorer.score(hh, tt, cc)

    _, speed = timed(eager, stored, t, c, args.batch)
    report["torch_predict_rows_per_s"] = round(speed)
    with scorer.model.full_window():  # the exported layout, in eager torch
        _, speed = timed(eager, h, t, c, args.batch)
    report["torch_full_width_rows_per_s"] = round(speed)
    if args.onnx:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        sess = ort.InferenceSession(str(args.onnx), opts, providers=["CPUExecutionProvider"])

        def run_onnx(hh: np.ndarray, tt: np.ndarray, cc: np.ndarray) -> np.ndarray:
            return sess.run(["prob"], {"history": hh, "target": tt, "context": cc})[0]

        probs, speed = timed(run_onnx, h, t, c, args.batch)
        report["onnx"] = _summary(args.onnx, probs, expected, speed)
    if args.torchscript:
        graph = torch.jit.load(str(args.torchscript))

        @torch.no_grad()
        def run_ts(hh: np.ndarray, tt: np.ndarray, cc: np.ndarray) -> np.ndarray:
            args_ = (torch.from_numpy(hh), torch.from_numpy(tt), torch.from_numpy(cc))
            return graph(*args_)[0].numpy()

        probs, speed = timed(run_ts, h, t, c, args.batch)
        report["torchscript"] = _summary(args.torchscript, probs, expected, speed)
    print(json.dumps(report, indent=2))


def _summary(path: Path, probs: np.ndarray, expected: np.ndarray, speed: float) -> dict:
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "max_abs_diff": float(np.abs(probs - expected).max()),
        "rows_per_s": round(speed),
    }


if __name__ == "__main__":
    main()
