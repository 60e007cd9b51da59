"""An open-loop load: valid requests at a fixed rate, each sent on schedule whatever the answers.

Request i is sent at t0 + i / rate from a task of its own, so a slow or refusing server does
not slow the offered load (a closed loop, ``client.drive``, waits for each answer before the
next request). Every answer is kept with its send time, latency, and what a 503 or 200 says;
how late the generator sent each request shows whether it kept up. Side tasks (a memory
sampler, a /ready poller, a fault or a reload) run beside the load with the same clock.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import httpx

from serveload.bodies import Requests
from serveload.report import percentile

MAX_CONNECTIONS = 2000  # open connections at most (answers pending at once), in all
CLIENTS = 50  # httpx clients that share them, in turn (see open_loop)
CLIENT_TIMEOUT_S = 30.0  # past it a request counts as a transport error
POOL = 10_000  # distinct bodies at most, sent in turn
WARMUP = 10  # untimed requests before the clock starts
KEPT_UP_MS = 10.0  # the generator kept up when its p99 lateness is at most this
HEADERS = {"content-type": "application/json"}

if importlib.util.find_spec("sniffio") is None:
    # httpcore tries `import sniffio` on every request and runs on asyncio without it; a failed
    # import searches sys.path each time (a sixth of the generator's time). None in sys.modules
    # makes it fail at once.
    sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

# a side task: given t0 (time.perf_counter() when the load began) and an event set once every
# request has its answer, it returns what it found
Side = Callable[[float, asyncio.Event], Coroutine[Any, Any, Any]]


class Refused(Exception):
    """The load test cannot run as asked (said before any load, or in the report)."""


@dataclass
class Answer:
    """One request of the open loop; times in seconds, ``sent`` after t0."""

    sent: float
    late: float  # sent minus its scheduled time
    status: str  # "200", "503", ..., or "error:ReadTimeout" for a transport error
    latency: float
    retry_after: str | None = None  # the Retry-After header of a 503
    reason: str | None = None  # the "reason" of a 503's JSON body
    run: str | None = None  # the "run" of a 200's JSON body

    @property
    def done(self) -> float:
        """When the answer came, after t0."""
        return self.sent + self.latency


def valid_bodies(maker: Requests, n: int) -> list[bytes]:
    """``n`` valid bodies (at most ``POOL`` distinct ones, in turn), made before any timing."""
    pool = [json.dumps(maker.valid()).encode() for _ in range(min(n, POOL))]
    return [pool[i % len(pool)] for i in range(n)]


async def send(client: httpx.AsyncClient, body: bytes, t0: float, scheduled: float) -> Answer:
    sent = time.perf_counter() - t0
    try:
        answer = await client.post("/v1/score", content=body, headers=HEADERS)
    except httpx.HTTPError as exc:
        latency = time.perf_counter() - t0 - sent
        return Answer(sent, sent - scheduled, f"error:{type(exc).__name__}", latency)
    latency = time.perf_counter() - t0 - sent
    out = Answer(sent, sent - scheduled, str(answer.status_code), latency)
    if answer.status_code == 503:
        out.retry_after = answer.headers.get("retry-after")
        out.reason = _field(answer, "reason")
    elif answer.status_code == 200:
        out.run = _field(answer, "run")
    return out


def _field(answer: httpx.Response, key: str) -> str | None:
    try:
        value = answer.json().get(key)
    except (ValueError, AttributeError):
        return None
    return None if value is None else str(value)


async def open_loop(
    url: str, bodies: Sequence[bytes], rate: float, sides: Sequence[Side] = ()
) -> tuple[list[Answer], list[Any], float]:
    """Send ``bodies`` at ``rate`` per second, with ``sides`` beside them; returns the
    answers in send order, what each side task returned, and the seconds from t0 to the
    last answer. Request i goes through client i mod ``CLIENTS``: httpcore's pool scans all
    its connections for each request, which with hundreds of them open costs more than the
    request itself."""
    per = MAX_CONNECTIONS // CLIENTS
    limits = httpx.Limits(max_connections=per, max_keepalive_connections=per)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=CLIENT_TIMEOUT_S)
            )
            for _ in range(CLIENTS)
        ]
        for body in bodies[:WARMUP]:
            await clients[0].post("/v1/score", content=body, headers=HEADERS)
        stop = asyncio.Event()
        t0 = time.perf_counter()
        side_tasks = [asyncio.create_task(side(t0, stop)) for side in sides]
        tasks = []
        for i, body in enumerate(bodies):
            # always yield, so that the tasks already due start now, not in a burst
            await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            client = clients[i % CLIENTS]
            tasks.append(asyncio.create_task(send(client, body, t0, i / rate)))
        answers = list(await asyncio.gather(*tasks))
        seconds = time.perf_counter() - t0
        stop.set()
        found = list(await asyncio.gather(*side_tasks))
    return answers, found, seconds


def latency_ms(answers: Sequence[Answer]) -> dict[str, float]:
    """p50/p95/p99/max latency of the answers with status 200, in ms."""
    lat = [a.latency * 1000 for a in answers if a.status == "200"]
    out = {f"p{q}": round(percentile(lat, q), 2) for q in (50, 95, 99)}
    return out | {"max": round(max(lat, default=0.0), 2)}


def statuses(answers: Sequence[Answer]) -> dict[str, Any]:
    """What the server answered: counts by status, 503s by reason, and the failures."""
    counts = Counter(a.status for a in answers)
    five = sum(n for s, n in counts.items() if s.startswith("5") and s != "503")
    errors = sum(n for s, n in counts.items() if s.startswith("error"))
    return {
        "requests": len(answers),
        "status": dict(sorted(counts.items())),
        "ok_200": counts["200"],
        "unavailable_503_by_reason": dict(
            Counter(a.reason or "(none)" for a in answers if a.status == "503")
        ),
        "other_5xx": five,
        "other_status": len(answers) - counts["200"] - counts["503"] - five - errors,
        "transport_errors": errors,
        "503_without_retry_after": sum(a.status == "503" and not a.retry_after for a in answers),
    }


def answer_failures(counts: dict[str, Any], *, transport: bool) -> list[str]:
    """What in ``statuses``'s counts fails a test: a 5xx other than 503, a 503 without
    Retry-After, and (with ``transport``) a transport error."""
    out = []
    if counts["other_5xx"]:
        out.append(f"{counts['other_5xx']} answers with a 5xx other than 503")
    if counts["503_without_retry_after"]:
        out.append(f"{counts['503_without_retry_after']} answers 503 without Retry-After")
    if transport and counts["transport_errors"]:
        out.append(f"{counts['transport_errors']} transport errors")
    return out


def generator(answers: Sequence[Answer], rate: float) -> dict[str, Any]:
    """Whether the generator kept to its schedule: lateness, and the rate it achieved."""
    late = [a.late * 1000 for a in answers]
    span = max((a.sent for a in answers), default=0.0) - min((a.sent for a in answers), default=0)
    p99 = percentile(late, 99)
    return {
        "target_rate_per_s": round(rate, 1),
        "achieved_rate_per_s": round((len(answers) - 1) / span, 1) if span > 0 else 0.0,
        "late_ms": {f"p{q}": round(percentile(late, q), 2) for q in (50, 99)}
        | {"max": round(max(late, default=0.0), 2)},
        "kept_up": p99 <= KEPT_UP_MS,
        "kept_up_rule": f"p99 lateness <= {KEPT_UP_MS:g} ms",
    }


def run_load(
    url: str, bodies: Sequence[bytes], rate: float, sides: Sequence[Side] = ()
) -> tuple[list[Answer], list[Any], float]:
    """``open_loop`` on a fresh event loop."""
    return asyncio.run(open_loop(url, bodies, rate, sides))
