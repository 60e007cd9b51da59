"""The load itself: bodies sent by concurrent keep-alive workers, and the in-process reference."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx

from serveload.bodies import Requests
from serveload.procs import Memory, cpu_seconds, own_cpu_seconds


async def drive(
    url: str,
    bodies: Sequence[tuple[str, bytes]],
    run_warm: bytes,
    args: argparse.Namespace,
    memory: Memory,
    seconds: float | None = None,
) -> dict[str, Any]:
    """Send ``bodies`` from ``concurrency`` workers over keep-alive connections: each once,
    or (with ``seconds``) over and over in turn until ``seconds`` have passed."""
    limits = httpx.Limits(max_connections=args.concurrency)
    headers = {"content-type": "application/json"}
    results: list[tuple[str, str, float]] = []
    at_checkpoint: dict[str, float] = {}
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        for _ in range(args.warmup):
            await client.post("/v1/score", content=run_warm, headers=headers)
        sampler = asyncio.create_task(memory.run(stop))
        next_index: Iterator[int] = (
            iter(range(len(bodies))) if seconds is None else itertools.count()
        )

        async def worker() -> None:
            for i in next_index:
                if seconds is not None and time.perf_counter() - start >= seconds:
                    break
                kind, content = bodies[i % len(bodies)]
                t0 = time.perf_counter()
                try:
                    answer = await client.post("/v1/score", content=content, headers=headers)
                    status = str(answer.status_code)
                except httpx.HTTPError as exc:
                    status = f"error:{type(exc).__name__}"
                results.append((kind, status, time.perf_counter() - t0))
                if len(results) == args.checkpoint:
                    memory.sample()
                    at_checkpoint.update(peak=memory.peak_kb / 1024, hwm=memory.hwm_mb())

        start, server_cpu, client_cpu = (
            time.perf_counter(),
            cpu_seconds(memory.pid),
            own_cpu_seconds(),
        )
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        seconds = time.perf_counter() - start
        server_cpu = cpu_seconds(memory.pid) - server_cpu
        client_cpu = own_cpu_seconds() - client_cpu
        stop.set()
        await sampler
        memory.sample()
        metrics = (await client.get("/metrics")).text
    return {
        "results": results,
        "seconds": seconds,
        "checkpoint": at_checkpoint,
        "metrics": metrics,
        "cpu_seconds": {"server": round(server_cpu, 1), "load_generator": round(client_cpu, 1)},
    }


def in_process(args: argparse.Namespace, model: dict[str, Any], batch_rows: float) -> float:
    """Candidates/s of ``Scorer.score_groups`` on batches shaped like the server's."""
    import torch

    import mmctr
    from mmctr.runtime import keep_freed_memory

    keep_freed_memory()  # as `mmctr serve` does (the CLI sets it for every command)
    torch.set_num_threads(args.threads or 1)
    scorer = mmctr.load_run(args.run, args.data, device="cpu")
    maker = Requests(model, args)
    users = max(1, round(batch_rows / args.candidates))
    cols = list(model["vocab"]["context"])
    batches = []
    for _ in range(20):
        bodies = [maker.valid() for _ in range(users)]
        batches.append(
            [(b["history"], [b["context"][c] for c in cols], b["candidates"]) for b in bodies]
        )
    scorer.score_groups(batches[0])
    start = time.perf_counter()
    for groups in batches[1:]:
        scorer.score_groups(groups)
    return (len(batches) - 1) * users * args.candidates / (time.perf_counter() - start)
