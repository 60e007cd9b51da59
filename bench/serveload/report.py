"""The JSON report of a load test: rates, latency percentiles, statuses, memory and CPU."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from typing import Any

from serveload.procs import Memory


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else 0.0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def report(
    run: dict[str, Any], model: dict[str, Any], args: argparse.Namespace, memory: Memory
) -> dict[str, Any]:
    results, seconds, metrics = run["results"], run["seconds"], run["metrics"]
    valid = [r for r in results if r[0] == "valid"]
    bad = [r for r in results if r[0] != "valid"]
    by_kind: dict[str, Counter[str]] = {}
    for kind, status, _ in results:
        by_kind.setdefault(kind, Counter())[status] += 1
    ok = [r for r in valid if r[1] == "200"]
    lat = [r[2] * 1000 for r in ok]
    batches = metric(metrics, "mmctr_batch_rows_count")
    forward_s = metric(metrics, "mmctr_forward_seconds_sum")
    end_peak = memory.peak_kb / 1024
    cp = run["checkpoint"]
    return {
        "run": model["run"],
        "model": model["model"],
        "requests": len(results),
        "concurrency": args.concurrency,
        "candidates": args.candidates,
        "history": "train rows of --data" if args.real_histories else args.history,
        "malformed_share": args.malformed,
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(results) / seconds, 1),
        "candidates_per_s": round(len(ok) * args.candidates / seconds, 1),
        "latency_ms_valid": {f"p{q}": round(percentile(lat, q), 2) for q in (50, 95, 99)}
        | {"max": round(max(lat, default=0.0), 2)},
        "status": dict(Counter(r[1] for r in results)),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "five_xx": sum(r[1].startswith("5") for r in results),
        "transport_errors": sum(r[1].startswith("error") for r in results),
        "valid_not_200": len(valid) - len(ok),
        "malformed_not_4xx": sum(not r[1].startswith("4") for r in bad),
        "server_forward_passes": int(batches),
        "server_mean_batch_rows": round(
            metric(metrics, "mmctr_batch_rows_sum") / max(batches, 1), 1
        ),
        # the model thread: its share of the run spent in forward passes, and its rows/s there
        "server_forward_busy_share": round(forward_s / seconds, 3),
        "server_rows_per_forward_second": round(
            metric(metrics, "mmctr_batch_rows_sum") / max(forward_s, 1e-9), 1
        ),
        "memory_mb": {
            "sampled_peak_rss_after_checkpoint": round(cp.get("peak", 0.0), 1),
            "sampled_peak_rss_end": round(end_peak, 1),
            "vmhwm_after_checkpoint": round(cp.get("hwm", 0.0), 1),
            "vmhwm_end": round(memory.hwm_mb(), 1),
            "checkpoint_requests": args.checkpoint,
        },
        "cpu_seconds": run["cpu_seconds"],
        "cores": os.cpu_count(),
        "load_average_1m_before": run["load_before"],
    }
