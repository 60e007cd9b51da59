"""Micro-batching: concurrent requests scored together in one forward pass, off the event loop.

A forward pass over 2,000 (history, candidate) rows costs far less than twenty passes over 100,
so requests that arrive close together are scored together. The first request of a batch waits
at most ``max_wait_s`` (counted from its arrival) for company; a batch holds at most
``max_batch`` rows; requests that queued while the previous batch ran go into the next one at
once. The model runs on one worker thread, so the event loop keeps accepting and refusing
requests while it computes, and each caller's future gets its own rows back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from mmctr.api import Group

T = TypeVar("T")

log = logging.getLogger("mmctr.serve")

ScoreFn = Callable[[list[Group]], list[np.ndarray]]
BatchObserver = Callable[[int, int, float], None]  # (requests, rows, seconds) of each pass


class ShuttingDown(RuntimeError):
    """The server stopped before this request was scored (503, not the caller's fault)."""


@dataclass
class _Job:
    group: Group
    rows: int
    future: asyncio.Future[np.ndarray]
    arrived: float


class MicroBatcher:
    """Collects ``Group``s from coroutines and scores them in batches on one thread."""

    def __init__(
        self,
        score: ScoreFn,
        *,
        max_batch: int,
        max_wait_s: float,
        threads: int = 0,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._score = score
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self._on_batch = on_batch
        # torch's thread count is per thread: set it on the thread that runs the model
        self._threads = threads
        self._executor = ThreadPoolExecutor(1, "mmctr-score", self._init_thread)
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task[None] | None = None
        self._carry: _Job | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _init_thread(self) -> None:
        if self._threads > 0:
            torch.set_num_threads(self._threads)

    async def score(self, group: Group) -> np.ndarray:
        """The probabilities of ``group``'s candidates, scored in some batch."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop:  # first call, or a new event loop
            self._queue, self._loop, self._carry = asyncio.Queue(), loop, None
            self._task = None
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._serve_forever(), name="mmctr-batcher")
        future: asyncio.Future[np.ndarray] = loop.create_future()
        self._queue.put_nowait(_Job(group, len(group[2]), future, loop.time()))
        return await future

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the model's thread, between scoring passes (e.g. registering items,
        which must not change the item table under a forward pass)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def close(self) -> None:
        """Stop collecting; callers still waiting get an error; the thread finishes its pass."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        waiting = [self._carry] if self._carry else []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for job in waiting:
            if not job.future.done():
                job.future.set_exception(ShuttingDown("the server is shutting down"))
        self._executor.shutdown(wait=True)

    async def _serve_forever(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._run(batch)
            except Exception:  # a bug, not the input: log it and keep serving the others
                log.exception("scoring a batch of %d requests failed", len(batch))

    async def _collect(self) -> list[_Job]:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        first, self._carry = self._carry or await self._queue.get(), None
        batch, rows = [first], first.rows
        deadline = first.arrived + self.max_wait_s
        while rows < self.max_batch:
            if not self._queue.empty():
                job = self._queue.get_nowait()
            else:
                wait = deadline - loop.time()
                if wait <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), wait)
                except TimeoutError:
                    break
            if job.future.done():  # its caller went away: nothing to compute
                continue
            if rows + job.rows > self.max_batch:
                self._carry = job
                break
            batch.append(job)
            rows += job.rows
        return [job for job in batch if not job.future.done()]

    async def _run(self, batch: list[_Job]) -> None:
        if not batch:
            return
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        try:
            results = await loop.run_in_executor(
                self._executor, self._score, [job.group for job in batch]
            )
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
