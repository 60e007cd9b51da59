"""Micro-batching: concurrent requests scored together in one forward pass, off the event loop.

A forward pass over 2,000 (history, candidate) rows costs far less than twenty passes over 100,
so requests that arrive close together are scored together. The first request of a batch waits
at most ``max_wait_s`` (counted from its arrival) for company; a batch holds at most
``max_batch`` rows; requests that queued while the previous batch ran go into the next one at
once. The model runs on one worker thread, so the event loop keeps accepting and refusing
requests while it computes, and each caller's future gets its own rows back.

Overload is refused, not queued: the rows queued or in the running pass are bounded by
``max_rows``, and each request waits at most until its deadline (``deadline_s`` after its
arrival). Past either it raises ``Unavailable`` (503). A request whose deadline passes while it
is queued leaves the queue unscored; one whose pass is running is answered at its deadline,
and its rows count as in flight until the pass ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from mmctr.api import Group
from mmctr.serve.admission import DEADLINE, QUEUE_FULL, SHUTTING_DOWN, Unavailable, seconds_left
from mmctr.serve.modelthread import ModelThread
from mmctr.serve.settings import QUEUE_BATCHES

T = TypeVar("T")

log = logging.getLogger("mmctr.serve")

ScoreFn = Callable[[list[Group]], list[np.ndarray]]
BatchObserver = Callable[[int, int, float], None]  # (requests, rows, seconds) of each pass
RowsObserver = Callable[[int], None]  # rows in flight, each time they change


class ShuttingDown(Unavailable):
    """The server stopped before this request was scored (503, not the caller's fault)."""

    def __init__(self) -> None:
        super().__init__(SHUTTING_DOWN, "the server is shutting down")


@dataclass(eq=False)  # eq=False: a job is removed from the queue by identity
class _Job:
    group: Group
    rows: int
    future: asyncio.Future[np.ndarray]
    arrived: float  # loop time it was queued; the batch's wait counts from its first job's
    queued: bool = field(default=True)


class MicroBatcher:
    """Collects ``Group``s from coroutines and scores them in batches on one thread."""

    def __init__(
        self,
        score: ScoreFn,
        *,
        max_batch: int,
        max_wait_s: float,
        max_rows: int = 0,
        deadline_s: float | None = None,
        threads: int = 0,
        on_batch: BatchObserver | None = None,
        on_rows: RowsObserver | None = None,
    ) -> None:
        """``max_rows``: rows queued or being scored (0: ``QUEUE_BATCHES`` batches);
        ``deadline_s``: from a request's arrival to its answer (None: no deadline);
        ``on_rows``: told the rows in flight whenever a request comes or goes, or a pass ends."""
        self._score = score
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_rows = max_rows or QUEUE_BATCHES * max_batch
        self.deadline_s = deadline_s
        self._on_batch = on_batch
        self._on_rows = on_rows
        # torch's thread count is per thread: set it on the thread that runs the model
        self._threads = threads
        self._executor = ModelThread("mmctr-score", self._init_thread)
        self._queue: deque[_Job] = deque()
        self._queued_rows = 0
        self._running: list[_Job] = []  # the pass in progress
        self._running_rows = 0
        self._pass_started: float | None = None  # time.monotonic() of the pass in progress
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _init_thread(self) -> None:
        if self._threads > 0:
            torch.set_num_threads(self._threads)

    @property
    def rows_in_flight(self) -> int:
        """Rows queued or in the pass that is running (the quantity ``max_rows`` bounds)."""
        return self._queued_rows + self._running_rows

    def pass_seconds(self) -> float:
        """How long the pass in progress has run; 0 when the model thread is idle."""
        started = self._pass_started
        return 0.0 if started is None else time.monotonic() - started

    async def score(self, group: Group) -> np.ndarray:
        """The probabilities of ``group``'s candidates, scored in some batch."""
        return (await self.score_all([group]))[0]

    async def score_all(self, groups: Sequence[Group]) -> list[np.ndarray]:
        """Each group's probabilities; the groups are admitted (or refused) together, so a
        request of several users is never half scored."""
        left = seconds_left(self.deadline_s) if self.deadline_s is not None else None
        self._bind(asyncio.get_running_loop())
        self._admit(sum(len(g[2]) for g in groups))
        jobs = [self._enqueue(group) for group in groups]
        self._rows_changed()
        try:
            async with asyncio.timeout(left):
                return list(await asyncio.gather(*(job.future for job in jobs)))
        except TimeoutError:
            ms = 1000 * (self.deadline_s or 0.0)
            raise Unavailable(DEADLINE, f"not scored within the deadline of {ms:g} ms") from None
        finally:
            for job in jobs:
                self._drop(job)
            self._rows_changed()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the model's thread, between scoring passes (e.g. registering items,
        which must not change the item table under a forward pass). No deadline here: a call
        answered 503 must not take effect later; the model process bounds its own calls."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Stop collecting; callers still waiting get ``ShuttingDown``; the model thread is
        not waited for (a pass that hangs must not hold up the server's exit)."""
        self._closed = True
        waiting = [*self._queue, *self._running]  # before the collector's cancel clears them
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for job in waiting:
            job.queued = False  # the queue is cleared below
            if not job.future.done():
                job.future.set_exception(ShuttingDown())
        self._queue.clear()
        self._queued_rows = 0
        self._executor.shutdown(wait=False)

    def _admit(self, rows: int) -> None:
        """Refuse the request if it would pass the bound; one that alone exceeds it (a batch
        request of many users) is still let in when nothing else is in flight."""
        if self._closed:
            raise ShuttingDown()
        in_flight = self.rows_in_flight
        if in_flight and in_flight + rows > self.max_rows:
            raise Unavailable(
                QUEUE_FULL,
                f"{in_flight} rows are queued or being scored; this server takes at most "
                f"{self.max_rows} (--max-queue-rows)",
            )

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Queue and collector on ``loop`` (a test may run one app on several loops)."""
        if self._wake is None or self._loop is not loop:  # first call, or a new event loop
            self._queue, self._queued_rows, self._loop = deque(), 0, loop
            self._running, self._running_rows = [], 0
            self._wake, self._task = asyncio.Event(), None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve_forever(), name="mmctr-batcher")

    def _rows_changed(self) -> None:
        if self._on_rows is not None:
            self._on_rows(self.rows_in_flight)

    def _enqueue(self, group: Group) -> _Job:
        assert self._loop is not None and self._wake is not None
        job = _Job(group, len(group[2]), self._loop.create_future(), self._loop.time())
        self._queue.append(job)
        self._queued_rows += job.rows
        self._wake.set()
        return job

    def _drop(self, job: _Job) -> None:
        """The caller is done with ``job``: out of the queue if still there, and no result."""
        if job.queued:
            self._queue.remove(job)
            self._queued_rows -= job.rows
            job.queued = False
        if not job.future.done():
            job.future.cancel()

    def _pop(self) -> _Job:
        job = self._queue.popleft()
        self._queued_rows -= job.rows
        job.queued = False
        return job

    async def _serve_forever(self) -> None:
        while True:
            batch = await self._collect()
            self._running = batch
            self._running_rows = sum(job.rows for job in batch)
            self._pass_started = time.monotonic()
            try:
                await self._run(batch)
            except Exception:  # a bug, not the input: log it and keep serving the others
                log.exception("scoring a batch of %d requests failed", len(batch))
            finally:
                self._running, self._running_rows, self._pass_started = [], 0, None
                self._rows_changed()

    async def _collect(self) -> list[_Job]:
        """The next batch: the queue's head, and those behind it that fit, waiting for more
        until ``max_wait_s`` after the head's arrival."""
        loop = asyncio.get_running_loop()
        while not self._queue:
            await self._arrival(None)
        first = self._pop()
        batch, rows = [first], first.rows
        until = first.arrived + self.max_wait_s
        while rows < self.max_batch:
            if not self._queue:
                if await self._arrival(until - loop.time()):
                    continue
                break
            if rows + self._queue[0].rows > self.max_batch:
                break  # it heads the next batch
            job = self._pop()
            batch.append(job)
            rows += job.rows
        return batch

    async def _arrival(self, timeout: float | None) -> bool:
        """Wait until a job is queued (True) or ``timeout`` seconds pass (False)."""
        assert self._wake is not None
        if timeout is not None and timeout <= 0:
            return False
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _run(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]  # callers gone: nothing to do
        if not batch:
            return
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self._score, [job.group for job in batch]
            )
        except Unavailable as exc:  # the model, not a request: the whole batch gets 503
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        except Exception as exc:
            if len(batch) > 1:  # find the request that failed; the others still get scores
                for job in batch:
                    await self._run([job])
                return
            if not batch[0].future.done():
                batch[0].future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(batch), sum(j.rows for j in batch), time.perf_counter() - start)
        for job, result in zip(batch, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)
