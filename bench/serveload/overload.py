"""--mode overload: the capacity, the latency unloaded, then an open-loop load of --factor
times the capacity: what was refused (503 with Retry-After, by reason), the latency of what
was served, and the server's memory over the phase."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from serveload.bodies import Requests
from serveload.capacity import capacity, closed
from serveload.openloop import (
    Refused,
    Side,
    answer_failures,
    generator,
    latency_ms,
    run_load,
    statuses,
    valid_bodies,
)
from serveload.procs import Memory, process_tree, status_kb

SEQUENTIAL = 200  # single requests one at a time: the latency of an idle server
SAMPLE_S = 0.1


def rss_series(pid: int | None) -> Side:
    """A side task: the server's resident memory (its process tree) every ``SAMPLE_S``;
    returns [(seconds after t0, MB)] (none without a pid)."""

    async def sample(t0: float, stop: asyncio.Event) -> list[tuple[float, float]]:
        series: list[tuple[float, float]] = []
        while pid and not stop.is_set():
            kb = sum(status_kb(p, "VmRSS") for p in process_tree(pid))
            series.append((time.perf_counter() - t0, kb / 1024))
            await asyncio.sleep(SAMPLE_S)
        return series

    return sample


def rss_at(series: list[tuple[float, float]], at: float) -> float | None:
    """The last sample at or before ``at`` (the first one if none is)."""
    before = [mb for t, mb in series if t <= at] or [mb for _, mb in series[:1]]
    return round(before[-1], 1) if before else None


def memory_report(series: list[tuple[float, float]], seconds: float, pid: int | None) -> Any:
    if not pid:
        return "no server pid (give --pid with --url)"
    return {
        **{f"rss_at_{pct}pct": rss_at(series, seconds * pct / 100) for pct in (10, 50, 100)},
        "rss_peak": round(max((mb for _, mb in series), default=0.0), 1),
        "vmhwm": round(Memory(pid).hwm_mb(), 1),
        "samples": len(series),
    }


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 2) if b > 0 else None


def run_overload(
    url: str, pid: int | None, model: dict[str, Any], maker: Requests, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str]]:
    """The three phases; the report and what failed."""
    measured = capacity(url, maker, args)
    cap = measured["requests_per_s"]
    if cap <= 0:
        raise Refused(f"no valid request got 200 while measuring the capacity: {measured}")
    half = cap / 2
    quiet, _, _ = run_load(url, valid_bodies(maker, round(half * args.capacity_seconds)), half)
    sequential = closed(url, maker, args, concurrency=1, requests=SEQUENTIAL)
    rate = args.factor * cap
    bodies = valid_bodies(maker, max(1, round(rate * args.seconds)))
    answers, (series,), seconds = run_load(url, bodies, rate, [rss_series(pid)])
    counts = statuses(answers)
    served = latency_ms(answers)
    unloaded = latency_ms(quiet)
    out = {
        "mode": "overload",
        "run": model["run"],
        "candidates": args.candidates,
        "capacity": measured,
        "unloaded": {
            "open_loop": {"rate_per_s": round(half, 1), **statuses(quiet)}
            | {"latency_ms_200": unloaded, "generator": generator(quiet, half)},
            "sequential": sequential,
        },
        "overload": {"factor": args.factor, "rate_per_s": round(rate, 1), "seconds": args.seconds}
        | {"load_seconds": round(seconds, 2), **counts, "latency_ms_200": served}
        | {"every_503_had_retry_after": counts["503_without_retry_after"] == 0}
        | {"generator": generator(answers, rate)},
        "memory_mb": memory_report(series, args.seconds, pid),
        "p99_ratio": {
            "vs_open_loop_half_capacity": _ratio(served["p99"], unloaded["p99"]),
            "vs_sequential": _ratio(served["p99"], sequential["latency_ms_200"]["p99"]),
        },
    }
    failures = answer_failures(counts, transport=True)
    return out | {"failures": failures}, failures
