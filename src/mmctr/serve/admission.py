"""When the server answers 503 instead of scores: the reasons, the deadline clock, the reply.

A server offered more than it can score must say so at once rather than queue without bound:
a request that would push the rows in flight past ``--max-queue-rows``, or that cannot be
answered within ``--deadline-ms`` of its arrival, or that arrives while the model process is
being replaced or the server is stopping, gets 503 with a ``Retry-After`` header and is counted
by reason. Every other 5xx would be a bug.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

QUEUE_FULL = "queue_full"  # the rows queued or being scored would pass --max-queue-rows
DEADLINE = "deadline"  # not answered within --deadline-ms of its arrival
MODEL_RESTART = "model_restart"  # the model process hung or died; a new one is loading
SHUTTING_DOWN = "shutting_down"  # the server stopped before the request was scored
REASONS = (QUEUE_FULL, DEADLINE, MODEL_RESTART, SHUTTING_DOWN)

# when the request's first byte came in (time.monotonic()); set by the ASGI layer in
# metrics.instrument, so that the deadline also covers reading and checking the body
ARRIVED: ContextVar[float | None] = ContextVar("mmctr_arrived", default=None)


class Unavailable(Exception):
    """The server cannot score this request now; not the caller's fault: 503, try again."""

    def __init__(self, reason: str, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s


def seconds_left(deadline_s: float) -> float:
    """How long the current request may still wait for its answer (may be negative)."""
    arrived = ARRIVED.get()
    now = time.monotonic()
    return (now if arrived is None else arrived) + deadline_s - now


def retry_after(seconds: float) -> str:
    """The header's value: whole seconds (RFC 9110), at least 1."""
    return str(max(1, math.ceil(seconds)))


def unavailable_handler(
    count: Callable[[str], None],
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """The exception handler that answers ``Unavailable`` with 503 and ``Retry-After``, and
    counts it by reason (``count(reason)``)."""

    async def unavailable(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, Unavailable)
        count(exc.reason)
        return JSONResponse(
            {"detail": f"server: {exc.message}", "field": "server", "reason": exc.reason},
            status_code=503,
            headers={"Retry-After": retry_after(exc.retry_after_s)},
        )

    return unavailable
