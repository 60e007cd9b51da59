"""Load test of `mmctr serve`: N requests at concurrency C, a share of them malformed.

    python bench/serve_load.py --run RUN --data DATA --requests 10000 --concurrency 16 \
        --candidates 100 --history 20 --malformed 0.1 --threads 2 --out result.json
    python bench/serve_load.py --url http://127.0.0.1:8000 --pid PID ...   (a running server)

With --run it starts `mmctr serve` itself (on a free loopback port) and stops it at the end.
Every valid request must get 200 and every malformed one a 4xx; the JSON report has
requests/s, candidates/s (of valid requests), latency percentiles, status counts by request
kind, and the server's resident memory: sampled every 0.1 s (the process and its children)
and its VmHWM read after --checkpoint requests and at the end, to show whether it stays flat.
Needs httpx (the serve extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

MALFORMED = (
    "unknown_item", "zero_item", "context_level", "context_missing", "context_extra",
    "history_too_long", "too_many_candidates", "empty_candidates", "string_id", "bad_json",
    "oversize_body",
)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, e.g. http://127.0.0.1:8000")
    target.add_argument("--run", help="start `mmctr serve --run RUN` for the test")
    p.add_argument("--data", help="data folder for --run")
    p.add_argument("--pid", type=int, help="the running server's pid (with --url), for memory")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--candidates", type=int, default=100)
    p.add_argument("--history", type=int, default=20, help="history items per valid request")
    p.add_argument(
        "--real-histories",
        action="store_true",
        help="instead of --history random items, the histories and context of random train rows "
        "of --data (the rows `mmctr bench` times, so its samples/s compare like for like)",
    )
    p.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests")
    p.add_argument("--checkpoint", type=int, default=1000, help="memory reading after N requests")
    p.add_argument("--warmup", type=int, default=50, help="untimed valid requests first")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="server torch threads (with --run)")
    p.add_argument("--serve-arg", action="append", default=[], help="extra `mmctr serve` flag")
    p.add_argument(
        "--reference",
        action="store_true",
        help="with --run: also time Scorer.score_groups in this process on the same shapes "
        "(batches of the server's mean size, --threads torch threads): the model without HTTP",
    )
    p.add_argument("--out", type=Path, help="also write the JSON report here")
    return p.parse_args(argv)


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "mmctr", "serve", "--run", args.run, "--data", args.data,
           "--port", str(port), *args.serve_arg]  # fmt: skip
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.Popen(cmd, stdout=sys.stderr)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("the server did not become ready in 300 s")


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn workers under --workers N)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            children = (task / "children").read_text() if (task / "children").exists() else ""
            todo += [int(c) for c in children.split()]
    return out


def status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (0 when unknown)."""
    if not pid:
        return 0.0
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Memory:
    """The server's resident memory: sampled sum over its processes, and their VmHWM."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.peak_kb = 0

    def sample(self) -> None:
        if self.pid:
            self.peak_kb = max(
                self.peak_kb, sum(status_kb(p, "VmRSS") for p in process_tree(self.pid))
            )

    def hwm_mb(self) -> float:
        return (
            sum(status_kb(p, "VmHWM") for p in process_tree(self.pid)) / 1024 if self.pid else 0.0
        )

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample()
            await asyncio.sleep(0.1)


def real_rows(data_dir: str) -> tuple[Any, Any]:
    """(histories, context levels) of the train split, as the run reads them."""
    from mmctr.config import Config
    from mmctr.data import load_dataset

    train = load_dataset(data_dir, Config().data, ("train",))["train"]
    return train.history, train.context


class Requests:
    """Seeded request bodies: valid ones and one of each malformed kind in turn."""

    def __init__(self, model: dict[str, Any], args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        self.items = model["vocab"]["items"]
        self.context = model["vocab"]["context"]
        self.limits = model["limits"]
        self.args = args
        self.real = real_rows(args.data) if args.real_histories else None

    def valid(self) -> dict[str, Any]:
        r, a = self.rng, self.args
        if self.real is not None:
            i = r.randrange(len(self.real[0]))
            history = [int(v) for v in self.real[0][i] if v != 0]  # left-padded, oldest first
            context = dict(zip(self.context, (int(v) for v in self.real[1][i]), strict=True))
            return {
                "history": history,
                "context": context,
                "candidates": [r.randrange(1, self.items) for _ in range(a.candidates)],
            }
        return {
            "history": [r.randrange(1, self.items) for _ in range(a.history)],
            "context": {k: r.randrange(size) for k, size in self.context.items()},
            "candidates": [r.randrange(1, self.items) for _ in range(a.candidates)],
        }

    def make(self, kind: str) -> bytes:
        body = self.valid()
        col = next(iter(self.context))
        if kind == "unknown_item":
            body["candidates"][self.rng.randrange(len(body["candidates"]))] = self.items + 7
        elif kind == "zero_item":
            body["history"][0] = 0
        elif kind == "context_level":
            body["context"][col] = self.context[col]
        elif kind == "context_missing":
            del body["context"][col]
        elif kind == "context_extra":
            body["context"]["hour_of_day"] = 3
        elif kind == "history_too_long":
            body["history"] = [1] * (self.limits["max_history"] + 1)
        elif kind == "too_many_candidates":
            body["candidates"] = [1] * (self.limits["max_candidates"] + 1)
        elif kind == "empty_candidates":
            body["candidates"] = []
        elif kind == "string_id":
            body["candidates"][0] = str(body["candidates"][0])
        elif kind == "bad_json":
            return json.dumps(body).encode()[:-5]
        elif kind == "oversize_body":
            return b'{"history": [' + b"1, " * (self.limits["max_body_bytes"] // 3) + b"1]}"
        return json.dumps(body).encode()

    def plan(self, n: int) -> list[str]:
        """Request kinds in order: about ``malformed`` of them bad, spread evenly, kinds cycled."""
        bad = round(n * self.args.malformed)
        kinds = ["valid"] * (n - bad) + [MALFORMED[i % len(MALFORMED)] for i in range(bad)]
        self.rng.shuffle(kinds)
        return kinds


async def drive(
    url: str,
    bodies: list[tuple[str, bytes]],
    run_warm: bytes,
    args: argparse.Namespace,
    memory: Memory,
) -> dict[str, Any]:
    """Send ``bodies`` from ``concurrency`` workers over keep-alive connections."""
    limits = httpx.Limits(max_connections=args.concurrency)
    headers = {"content-type": "application/json"}
    results: list[tuple[str, str, float]] = []
    at_checkpoint: dict[str, float] = {}
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        for _ in range(args.warmup):
            await client.post("/v1/score", content=run_warm, headers=headers)
        sampler = asyncio.create_task(memory.run(stop))
        next_index = iter(range(len(bodies)))

        async def worker() -> None:
            for i in next_index:
                kind, content = bodies[i]
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


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if ordered else 0.0


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def report(
    run: dict[str, Any], model: dict[str, Any], args: argparse.Namespace, memory: Memory
) -> dict[str, Any]:
    results, seconds, metrics = run["results"], run["seconds"], run["metrics"]
    valid = [r for r in results if r[0] == "valid"]
    bad = [r for r in results if r[0] != "valid"]
    by_kind: dict[str, Counter[str]] = {}
    for kind, status, _ in results:
        by_kind.setdefault(kind, Counter())[status] += 1
    ok = [r for r in valid if r[1] == "200"]
    lat = [r[2] * 1000 for r in ok]
    batches = metric(metrics, "mmctr_batch_rows_count")
    forward_s = metric(metrics, "mmctr_forward_seconds_sum")
    end_peak = memory.peak_kb / 1024
    cp = run["checkpoint"]
    return {
        "run": model["run"],
        "model": model["model"],
        "requests": len(results),
        "concurrency": args.concurrency,
        "candidates": args.candidates,
        "history": "train rows of --data" if args.real_histories else args.history,
        "malformed_share": args.malformed,
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(results) / seconds, 1),
        "candidates_per_s": round(len(ok) * args.candidates / seconds, 1),
        "latency_ms_valid": {f"p{q}": round(percentile(lat, q), 2) for q in (50, 95, 99)}
        | {"max": round(max(lat, default=0.0), 2)},
        "status": dict(Counter(r[1] for r in results)),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "five_xx": sum(r[1].startswith("5") for r in results),
        "transport_errors": sum(r[1].startswith("error") for r in results),
        "valid_not_200": len(valid) - len(ok),
        "malformed_not_4xx": sum(not r[1].startswith("4") for r in bad),
        "server_forward_passes": int(batches),
        "server_mean_batch_rows": round(
            metric(metrics, "mmctr_batch_rows_sum") / max(batches, 1), 1
        ),
        # the model thread: its share of the run spent in forward passes, and its rows/s there
        "server_forward_busy_share": round(forward_s / seconds, 3),
        "server_rows_per_forward_second": round(
            metric(metrics, "mmctr_batch_rows_sum") / max(forward_s, 1e-9), 1
        ),
        "memory_mb": {
            "sampled_peak_rss_after_checkpoint": round(cp.get("peak", 0.0), 1),
            "sampled_peak_rss_end": round(end_peak, 1),
            "vmhwm_after_checkpoint": round(cp.get("hwm", 0.0), 1),
            "vmhwm_end": round(memory.hwm_mb(), 1),
            "checkpoint_requests": args.checkpoint,
        },
        "cpu_seconds": run["cpu_seconds"],
        "cores": os.cpu_count(),
        "load_average_1m_before": run["load_before"],
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    proc, url = start_server(args) if args.run else (None, args.url.rstrip("/"))
    memory = Memory(proc.pid if proc else args.pid)
    try:
        model = httpx.get(f"{url}/v1/model", timeout=30).json()
        maker = Requests(model, args)
        cache: dict[str, bytes] = {}
        bodies = []
        for kind in maker.plan(args.requests):
            if kind == "oversize_body":  # one 1 MB body, reused
                content = cache.setdefault(kind, maker.make(kind))
            else:
                content = (
                    maker.make(kind) if kind != "valid" else json.dumps(maker.valid()).encode()
                )
            bodies.append((kind, content))
        warm = json.dumps(maker.valid()).encode()
        load_before = os.getloadavg()[0]
        run = asyncio.run(drive(url, bodies, warm, args, memory))
        run["load_before"] = round(load_before, 2)
        out = report(run, model, args, memory)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    if args.reference and args.run:
        rate = in_process(args, model, out["server_mean_batch_rows"])
        out["in_process_candidates_per_s"] = round(rate, 1)
        out["http_share_of_in_process"] = round(out["candidates_per_s"] / rate, 3)
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    failed = (
        out["five_xx"]
        or out["transport_errors"]
        or out["valid_not_200"]
        or out["malformed_not_4xx"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
