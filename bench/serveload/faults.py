"""Faults for --mode fault: find the server's model process, stop or kill it on time, poll
/ready beside the load, and leave nothing stopped at the end.

The model runs in a child process spawned with multiprocessing's "spawn" (its command line
holds ``spawn_main``); under ``--workers N`` uvicorn's workers are spawned too, each with its
own model process below it, so the model processes are the spawned leaves of the server's
process tree (the resource tracker is not spawned that way, and is skipped by name too).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from serveload.openloop import Refused, Side
from serveload.procs import children, process_tree

POLL_S = 0.1  # how often /ready is asked


@dataclass(frozen=True, order=True)
class ModelProc:
    pid: int
    parent: int  # the server, or the uvicorn worker it serves


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def state(pid: int | None) -> str | None:
    """The process's state letter (R, S, T for stopped, Z ...); None once it has gone."""
    if pid is None:
        return None
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def gone(pid: int | None) -> bool:
    return state(pid) in (None, "Z", "X")


def _spawned(pid: int) -> bool:
    line = cmdline(pid)
    return "spawn_main" in line and "resource_tracker" not in line


def model_processes(server: int) -> list[ModelProc]:
    """The spawned leaves below ``server``: its model processes, with their parents."""
    parent_of: dict[int, int] = {}
    todo, seen = [server], []
    while todo:
        p = todo.pop()
        seen.append(p)
        for child in children(p):
            parent_of[child] = p
            todo.append(child)
    spawned = {p for p in seen if p != server and not gone(p) and _spawned(p)}
    above: set[int] = set()  # processes with a spawned process below them
    for p in spawned:
        while p in parent_of:
            p = parent_of[p]
            above.add(p)
    return sorted(ModelProc(p, parent_of[p]) for p in spawned if p not in above)


def pick_model(
    server: int, exclude: frozenset[int] = frozenset(), parent: int | None = None
) -> ModelProc:
    """The model process that serves (below ``parent`` when given); refused when there is
    none, or when one server process has more than one (a reload under way)."""
    found = [
        m
        for m in model_processes(server)
        if m.pid not in exclude and (parent is None or m.parent == parent)
    ]
    if not found:
        where = f"pid {server}" + (f", parent {parent}" if parent else "")
        raise Refused(
            f"no model process below the server ({where}): "
            "a server started with --in-process has none to stop or kill"
        )
    parents = [m.parent for m in found]
    if len(set(parents)) < len(parents):
        pids = ", ".join(str(m.pid) for m in found)
        raise Refused(
            f"more than one model process below one server process ({pids}): "
            "which one serves is unclear (a reload under way?)"
        )
    return found[0]


async def _until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - time.perf_counter()))


class Injector:
    """A side task: SIGSTOP the model process at ``stop_at`` s, SIGKILL the one then serving
    (its replacement) at ``kill_at`` s; ``cleanup`` continues whatever is left stopped."""

    def __init__(self, server: int, stop_at: float, kill_at: float) -> None:
        self.server, self.stop_at, self.kill_at = server, stop_at, kill_at
        self.faults: list[dict[str, Any]] = []
        self.stopped: int | None = None
        self.parent: int | None = None

    async def __call__(self, t0: float, stop: asyncio.Event) -> list[dict[str, Any]]:
        await _until(t0 + self.stop_at)
        self._fault(signal.SIGSTOP, t0, frozenset(), None)
        await _until(t0 + self.kill_at)
        stopped = frozenset({self.stopped} if self.stopped else ())
        self._fault(signal.SIGKILL, t0, stopped, self.parent)
        return self.faults

    def _fault(
        self, sig: signal.Signals, t0: float, exclude: frozenset[int], parent: int | None
    ) -> None:
        fault: dict[str, Any] = {"signal": sig.name}
        try:
            model = pick_model(self.server, exclude, parent)
            os.kill(model.pid, sig)
        except (Refused, ProcessLookupError) as exc:
            fault |= {"at": time.perf_counter() - t0, "error": str(exc) or type(exc).__name__}
            self.faults.append(fault)
            return
        fault |= {"at": time.perf_counter() - t0, "pid": model.pid}
        if sig == signal.SIGSTOP:
            self.stopped, self.parent = model.pid, model.parent
        elif self.stopped is not None:
            fault["stopped_pid_replaced"] = model.pid != self.stopped
        self.faults.append(fault)

    def cleanup(self) -> dict[str, Any]:
        """Whether the stopped process is gone; SIGCONT it if not, and any other stopped
        process below the server; then what is still stopped (nothing, normally)."""
        was_gone = gone(self.stopped)
        continued = []
        below = process_tree(self.server)
        for pid in [*([self.stopped] if self.stopped else []), *below]:
            if state(pid) == "T" and pid not in continued:
                try:
                    os.kill(pid, signal.SIGCONT)
                    continued.append(pid)
                except ProcessLookupError:
                    pass
        still = [p for p in {*below, *([self.stopped] if self.stopped else [])} if state(p) == "T"]
        return {
            "stopped_pid": self.stopped,
            "stopped_process_gone": was_gone,
            "continued_pids": continued,
            "left_stopped_pids": sorted(still),
        }


def ready_poller(url: str) -> Side:
    """A side task: GET /ready every ``POLL_S``; returns [(seconds after t0, status)]."""

    async def poll(t0: float, stop: asyncio.Event) -> list[tuple[float, str]]:
        polls: list[tuple[float, str]] = []
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            while not stop.is_set():
                at = time.perf_counter() - t0
                try:
                    status = str((await client.get("/ready")).status_code)
                except httpx.HTTPError as exc:
                    status = f"error:{type(exc).__name__}"
                polls.append((at, status))
                await _until(t0 + at + POLL_S)
        return polls

    return poll


def changes(polls: list[tuple[float, str]]) -> list[dict[str, Any]]:
    """The polls where /ready's status changed (the first one too)."""
    out: list[dict[str, Any]] = []
    for at, status in polls:
        if not out or out[-1]["status"] != status:
            out.append({"at_s": round(at, 3), "status": status})
    return out
