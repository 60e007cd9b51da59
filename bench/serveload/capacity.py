"""Closed-loop measures for the other modes: the capacity (requests/s of valid requests at
--concurrency, for a while) and the latency of single requests sent one at a time."""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from typing import Any

from serveload.bodies import Requests
from serveload.client import drive
from serveload.openloop import Refused, valid_bodies
from serveload.procs import Memory
from serveload.report import percentile

CLOSED_POOL = 2000  # distinct bodies of a timed closed loop, sent in turn


def closed(
    url: str,
    maker: Requests,
    args: argparse.Namespace,
    *,
    concurrency: int,
    seconds: float | None = None,
    requests: int | None = None,
) -> dict[str, Any]:
    """``client.drive`` with valid requests only: for ``seconds``, or ``requests`` of them."""
    pool = [("valid", b) for b in valid_bodies(maker, requests or CLOSED_POOL)]
    opts = argparse.Namespace(**{**vars(args), "concurrency": concurrency, "checkpoint": 0})
    run = asyncio.run(drive(url, pool, pool[0][1], opts, Memory(None), seconds=seconds))
    results, elapsed = run["results"], run["seconds"]
    lat = [r[2] * 1000 for r in results if r[1] == "200"]
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "requests": len(results),
        "status": dict(sorted(Counter(r[1] for r in results).items())),
        "requests_per_s": round(len(lat) / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms_200": {f"p{q}": round(percentile(lat, q), 2) for q in (50, 95, 99)}
        | {"max": round(max(lat, default=0.0), 2)},
    }


def capacity(url: str, maker: Requests, args: argparse.Namespace) -> dict[str, Any]:
    """Valid requests at --concurrency for --capacity-seconds: its requests/s of 200s (or
    --capacity, as given)."""
    if getattr(args, "capacity", None):
        return {"given": True, "requests_per_s": args.capacity}
    out = closed(url, maker, args, concurrency=args.concurrency, seconds=args.capacity_seconds)
    if set(out["status"]) != {"200"}:
        out["note"] = (
            "some requests were refused: the queue holds fewer than --concurrency requests, "
            "so this reads low; measure with a larger queue and give it as --capacity"
        )
    return out


def rate_for(
    url: str, maker: Requests, args: argparse.Namespace
) -> tuple[float, dict[str, Any] | None]:
    """--rate, or half the capacity measured first (then with that measure)."""
    if args.rate:
        return args.rate, None
    measured = capacity(url, maker, args)
    if measured["requests_per_s"] <= 0:
        raise Refused(f"no valid request got 200 while measuring the capacity: {measured}")
    return measured["requests_per_s"] / 2, measured
