"""Several runs of a plan at once, each in a worker process of its own (``--jobs N``).

The model of the CPU preset is small: a 2-thread process keeps 2 cores only partly busy, and
two 1-thread processes train more samples per second in all (docs/experiments.md). Each
worker is a fresh (spawned, not forked) Python process: it reads
the data once, runs the jobs it is handed with cores/N torch threads unless train.num_threads
says otherwise, and sends everything it has to say through one queue, in order: that a job
started, its log lines, and its row of results. This process prints and writes all of it, so
the log and the tables have a single writer. Every job writes only its own run folder, so an
interrupted parallel experiment resumes like a sequential one.
"""

from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import torch

from mmctr.errors import MmctrError
from mmctr.experiments.cold import HeldOutItems
from mmctr.experiments.plan import Plan
from mmctr.experiments.runner import Progress, action_of, load_experiment_data, run_job
from mmctr.runtime import available_cpus, keep_freed_memory
from mmctr.training.tracking import Tracking

_POLL_SECONDS = 1.0
_worker: dict[str, Any] = {}  # a worker process's plan, data, output folder and queue


class WorkerDied(MmctrError):
    """A worker process ended without reporting its job (killed, or out of memory)."""


def threads_per_job(jobs: int) -> int:
    return max(1, available_cpus() // jobs)


def run_parallel(
    plan: Plan,
    data_dir: str | Path,
    out: Path,
    progress: Progress,
    held_out: HeldOutItems | None = None,
    tracking: Tracking | None = None,
) -> None:
    """Run every job of ``plan`` on ``progress.jobs`` worker processes; rows go to progress.
    ``held_out``: the items each worker holds out of its data (cold.py); ``tracking``: where
    the workers log the jobs they train (a frozen value: it pickles)."""
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    threads = threads_per_job(progress.jobs)
    progress.log(
        f"{progress.jobs} runs at a time, each with {threads} torch thread(s) "
        "unless train.num_threads sets it"
    )
    pool = ProcessPoolExecutor(
        progress.jobs,
        mp_context=ctx,
        initializer=_start_worker,
        initargs=(plan, str(data_dir), str(out), messages, threads, held_out, tracking),
    )
    try:
        futures = [pool.submit(_run_one, i) for i in range(len(plan.jobs))]
        while len(progress.results) < len(plan.jobs):
            try:
                kind, i, payload = messages.get(timeout=_POLL_SECONDS)
            except queue_module.Empty:
                _raise_if_a_worker_failed(futures, progress)
                continue
            if kind == "start":
                progress.started(i, payload)
            elif kind == "line":
                progress.job_log(i)(payload)
            else:
                progress.finished(i, payload)
    except BaseException:
        stop_pool(pool)
        raise
    pool.shutdown(wait=True)


def _raise_if_a_worker_failed(futures: list[Future[None]], progress: Progress) -> None:
    for i, future in enumerate(futures):
        if i in progress.results or not future.done():
            continue
        exc = future.exception()
        if isinstance(exc, BrokenProcessPool):
            raise WorkerDied(
                f"a worker process died during {progress.plan.jobs[i].name} (killed, or out of "
                "memory? each worker holds its own copy of the data); run the same command "
                "again to resume, with fewer --jobs if memory is short"
            ) from exc
        if exc is not None:
            raise exc
        # finished without an error but its row is not read yet: the queue will bring it


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and end the workers now; their runs resume later."""
    # no public API for this on 3.11; read before shutdown(), which forgets the processes
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=10)


def _start_worker(
    plan: Plan,
    data_dir: str,
    out: str,
    messages: Any,
    threads: int,
    held_out: HeldOutItems | None,
    tracking: Tracking | None = None,
) -> None:
    keep_freed_memory()
    torch.set_num_threads(threads)
    exp = load_experiment_data(plan, data_dir, held_out)
    _worker.update(plan=plan, exp=exp, out=Path(out), messages=messages, tracking=tracking)


def _run_one(i: int) -> None:
    job = _worker["plan"].jobs[i]
    run_dir = _worker["out"] / "runs" / job.name
    messages = _worker["messages"]
    messages.put(("start", i, action_of(run_dir)))

    def log(line: str) -> None:
        messages.put(("line", i, line))

    row = run_job(job, _worker["exp"], run_dir, log=log, tracking=_worker["tracking"])
    messages.put(("row", i, row))
