"""Prometheus metrics of one server, and the ASGI layer that records them and limits bodies.

Both are plain ASGI middleware rather than FastAPI's ``BaseHTTPMiddleware``, which costs a
task per request; at thousands of requests a second on two cores that shows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from mmctr.serve import multiproc
from mmctr.serve.admission import ARRIVED, REASONS

# the *_created series (a timestamp per label set) double the output and say nothing here
disable_created_metrics()

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
ROW_BUCKETS = (1, 10, 50, 100, 200, 500, 1000, 1500, 2000, 3000, 5000, 10000)


class ServeMetrics:
    """The counters of one app, in a registry of its own (several apps may share a process).
    Under ``--workers N`` they are kept in the workers' shared folder (multiproc.py) and a
    scrape shows the whole server."""

    def __init__(self, paths: set[str]) -> None:
        self.registry = CollectorRegistry()
        self.paths = paths  # known routes; any other path is counted as "other"
        self.requests = Counter(
            "mmctr_requests", "HTTP requests by path and status", ["path", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "mmctr_request_seconds", "Request latency, first byte in to last byte out", ["path"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_requests = Histogram(
            "mmctr_batch_requests", "Users (score requests) per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry,
        )  # fmt: skip
        self.batch_rows = Histogram(
            "mmctr_batch_rows", "(history, candidate) rows per forward pass",
            buckets=ROW_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.forward = Histogram(
            "mmctr_forward_seconds", "Time of one forward pass on the worker thread",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.candidates = Counter(
            "mmctr_candidates_scored", "Candidates scored", registry=self.registry
        )
        self.unavailable = Counter(
            "mmctr_unavailable", "Requests answered 503 with Retry-After, by reason", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        for reason in REASONS:  # every reason shows, at 0 until it happens
            self.unavailable.labels(reason)
        self.restarts = Counter(
            "mmctr_model_restarts", "Model processes started to replace one that hung or died",
            registry=self.registry,
        )  # fmt: skip
        self.reloads = Counter(
            "mmctr_reloads", "Reloads (POST /admin/reload, SIGHUP) by outcome: ok, busy (409: "
            "another was under way) or failed (the old model kept answering)", ["outcome"],
            registry=self.registry,
        )  # fmt: skip
        for outcome in ("ok", "busy", "failed"):
            self.reloads.labels(outcome)
        # gauges are set, not read at scrape time: another worker's scrape reads the files
        self.rows_in_flight = Gauge(
            "mmctr_rows_in_flight", "(history, candidate) rows queued or being scored",
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.workers = Gauge(
            "mmctr_workers", "Server processes alive (uvicorn workers under --workers N)",
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.workers.set(1)

    def exposition(self) -> bytes:
        """The Prometheus text of this server: every worker's under ``--workers N``."""
        return multiproc.exposition() if multiproc.enabled() else generate_latest(self.registry)

    def count_reload(self, outcome: str) -> None:
        self.reloads.labels(outcome).inc()

    def count_unavailable(self, reason: str) -> None:
        self.unavailable.labels(reason).inc()

    def observe_batch(self, requests: int, rows: int, seconds: float) -> None:
        self.batch_requests.observe(requests)
        self.batch_rows.observe(rows)
        self.forward.observe(seconds)
        self.candidates.inc(rows)


def instrument(app: ASGIApp, metrics: ServeMetrics, max_body_bytes: int) -> ASGIApp:
    """``app`` with every HTTP request counted and timed, and bodies over the limit refused."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        ARRIVED.set(time.monotonic())  # the request's deadline counts from here
        status = 500  # if the app raises before it answers
        path = scope["path"] if scope["path"] in metrics.paths else "other"

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            declared = dict(scope["headers"]).get(b"content-length", b"0")
            too_big = declared.isdigit() and int(declared) > max_body_bytes
            body = None if too_big else await _read_body(receive, max_body_bytes)
            if body is None:
                await _too_large(send_status, max_body_bytes)
            else:
                await app(scope, _replay(body, receive), send_status)
        finally:
            metrics.requests.labels(path, str(status)).inc()
            metrics.latency.labels(path).observe(time.perf_counter() - start)

    return wrapped


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None as soon as it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then waits as the server's does."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        {"detail": f"body: larger than this server's limit of {limit} bytes", "field": "body"}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
