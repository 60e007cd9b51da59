"""--mode fault: a constant open-loop load while the model process is stopped, then killed;
how the server answered meanwhile and how soon it scored again, fault by fault.

The recovery is the send time of the first request sent after the fault that got 200. Under
``--workers N`` only the worker whose model process is hit refuses, so another worker's 200
comes at once: there the last refusal sent before the next fault says when it recovered."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

from serveload.bodies import Requests
from serveload.capacity import rate_for
from serveload.faults import Injector, changes, pick_model, ready_poller
from serveload.openloop import (
    Answer,
    Refused,
    answer_failures,
    generator,
    latency_ms,
    run_load,
    statuses,
    valid_bodies,
)


def label(answer: Answer) -> str:
    return answer.status + (f" {answer.reason}" if answer.reason else "")


def _after(first: Sequence[float], at: float) -> float | None:
    return round(min(first) - at, 3) if first else None


def _last(times: Sequence[float], at: float) -> float | None:
    return round(max(times) - at, 3) if times else None


def fault_report(
    fault: dict[str, Any],
    answers: Sequence[Answer],
    polls: Sequence[tuple[float, str]],
    until: float,
) -> dict[str, Any]:
    """One fault: when the first refusals came, what was answered until the first request
    sent after the fault got 200 (the recovery), and /ready meanwhile. Only the requests sent
    before ``until`` (the next fault) count."""
    at = fault["at"]
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in fault.items()}
    if "error" in fault:
        return out | {"recovery_s": None}
    answered = [a for a in answers if a.done >= at and a.sent < until]
    recovered = min(
        (a.sent for a in answers if at <= a.sent < until and a.status == "200"), default=None
    )
    between = [a for a in answered if recovered is None or a.sent < recovered]
    ready_503 = [t for t, status in polls if at <= t < until and status == "503"]
    return out | {
        "first_non_200_after_s": _after([a.done for a in answered if a.status != "200"], at),
        "first_503_after_s": _after([a.done for a in answered if a.status == "503"], at),
        "answers_until_recovery": dict(sorted(Counter(label(a) for a in between).items())),
        "recovery_s": None if recovered is None else round(recovered - at, 3),
        # under --workers N the other workers answer meanwhile: the refusals' end says more
        "last_non_200_after_s": _last(
            [a.done for a in answers if at <= a.sent < until and a.status != "200"], at
        ),
        "ready_last_503_after_s": round(max(ready_503) - at, 3) if ready_503 else None,
    }


def run_fault(
    url: str, pid: int | None, model: dict[str, Any], maker: Requests, args: argparse.Namespace
) -> tuple[dict[str, Any], list[str]]:
    """The load with its two faults; the report and what failed."""
    if pid is None:
        raise Refused("--mode fault needs the server's pid: give --run, or --url with --pid")
    first = pick_model(pid)  # refuses before any load when there is no model process to stop
    rate, measured = rate_for(url, maker, args)
    bodies = valid_bodies(maker, max(1, round(rate * args.seconds)))
    injector = Injector(pid, args.stop_at, args.kill_at)
    try:
        answers, (faults, polls), seconds = run_load(
            url, bodies, rate, [injector, ready_poller(url)]
        )
    finally:
        left = injector.cleanup()
    ends = [f["at"] for f in faults[1:]] + [math.inf]
    reports = [fault_report(f, answers, polls, end) for f, end in zip(faults, ends, strict=True)]
    counts = statuses(answers)
    failures = [
        f"{r['signal']}: {r.get('error', 'no recovery')}"
        for r in reports
        if r["recovery_s"] is None
    ]
    failures += [
        f"{r['signal']}: recovered in {r['recovery_s']} s, over --recover-within "
        f"{args.recover_within:g}"
        for r in reports
        if r["recovery_s"] is not None and r["recovery_s"] > args.recover_within
    ]
    failures += answer_failures(counts, transport=False) + (
        [f"processes left stopped: {left['left_stopped_pids']}"]
        if left["left_stopped_pids"]
        else []
    )
    out = {
        "mode": "fault",
        "run": model["run"],
        "candidates": args.candidates,
        "capacity": measured,
        "rate_per_s": round(rate, 1),
        "seconds": args.seconds,
        "load_seconds": round(seconds, 2),
        "model_process_at_start": first.pid,
        "faults": reports,
        "recover_within_s": args.recover_within,
        "ready_changes": changes(polls),
        "stopped_process": left,
        **counts,
        "latency_ms_200": latency_ms(answers),
        "generator": generator(answers, rate),
        "failures": failures,
    }
    return out, failures
