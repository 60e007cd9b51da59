"""The server process: start `mmctr serve`, and read its memory and CPU time from /proc."""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


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


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (none once it has gone)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread or the process went away meanwhile
            continue
    return out


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn workers under --workers N)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
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
