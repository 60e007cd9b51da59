"""The modes of bench/serve_load.py besides the closed loop: their flags, the server they run
against, and one JSON report each (overload.py, faultmode.py, reloadmode.py)."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from serveload.bodies import Requests
from serveload.faultmode import run_fault
from serveload.openloop import Refused
from serveload.overload import run_overload
from serveload.procs import start_server
from serveload.reloadmode import run_reload

MODES = ("closed", "overload", "fault", "reload")
SECONDS = {"overload": 60.0, "fault": 60.0, "reload": 30.0}  # --seconds unless given

Runner = Callable[
    [str, int | None, dict[str, Any], Requests, argparse.Namespace],
    tuple[dict[str, Any], list[str]],
]
RUNNERS: dict[str, Runner] = {"overload": run_overload, "fault": run_fault, "reload": run_reload}


def add_mode_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mode", choices=MODES, default="closed", help="closed: the load above")
    p.add_argument(
        "--seconds", type=float, help="the open-loop load (overload, fault: 60; reload: 30)"
    )
    p.add_argument("--factor", type=float, default=2.0, help="overload: times the capacity")
    p.add_argument(
        "--capacity-seconds",
        type=float,
        default=20.0,
        help="the closed loop at --concurrency that measures the capacity (and the open loop "
        "at half of it, for overload)",
    )
    p.add_argument(
        "--capacity",
        type=float,
        help="the capacity in requests/s, measured elsewhere, instead of the closed loop: for "
        "a server whose queue holds fewer requests than --concurrency, where the closed loop "
        "spends the server's time on 503s and reads low",
    )
    p.add_argument("--rate", type=float, help="fault, reload: requests/s (default: capacity / 2)")
    p.add_argument("--stop-at", type=float, default=10.0, help="fault: SIGSTOP the model, s")
    p.add_argument("--kill-at", type=float, default=35.0, help="fault: SIGKILL its replacement, s")
    p.add_argument("--recover-within", type=float, default=30.0, help="fault: the limit, s")
    p.add_argument("--reload-run", help="reload: the run to switch to")
    p.add_argument("--reload-at", type=float, default=10.0, help="reload: when, s")
    p.add_argument("--token-file", type=Path, help="reload: the bearer token for /admin/reload")


def problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags of a mode other than closed (None: nothing)."""
    if args.seconds is None:
        args.seconds = SECONDS[args.mode]
    if (
        args.seconds <= 0
        or args.capacity_seconds <= 0
        or (args.rate is not None and args.rate <= 0)
        or (args.capacity is not None and args.capacity <= 0)
    ):
        return "--seconds, --capacity-seconds, --capacity and --rate must be positive"
    if args.mode == "fault":
        if args.url and not args.pid:
            return "--mode fault needs the server's pid: --pid with --url"
        if not 0 <= args.stop_at < args.kill_at < args.seconds:
            return "--mode fault needs 0 <= --stop-at < --kill-at < --seconds"
    if args.mode == "reload":
        if not args.reload_run:
            return "--mode reload needs --reload-run"
        if not 0 <= args.reload_at < args.seconds:
            return "--mode reload needs 0 <= --reload-at < --seconds"
    return None


@contextmanager
def server(args: argparse.Namespace) -> Iterator[tuple[str, int | None]]:
    """(url, pid) of the server: started with --run (stopped at the end), or --url/--pid."""
    if not args.run:
        yield args.url.rstrip("/"), args.pid
        return
    proc, url = start_server(args)
    try:
        yield url, proc.pid
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_mode(args: argparse.Namespace) -> int:
    """Run --mode; print the report (and write --out). 1 if the test failed, 2 if refused."""
    if (why := problem(args)) is not None:
        print(f"serve_load: {why}", file=sys.stderr)
        return 2
    try:
        with server(args) as (url, pid):
            model = httpx.get(f"{url}/v1/model", timeout=30).json()
            out, failures = RUNNERS[args.mode](url, pid, model, Requests(model, args), args)
    except Refused as exc:
        print(f"serve_load: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    for failure in failures:
        print(f"serve_load: FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0
