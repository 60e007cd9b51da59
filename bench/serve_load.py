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

--mode chooses the test (closed, the default, is the one above); the others send valid
requests open-loop, at a fixed rate whatever the answers (serveload/openloop.py), and exit 1
on a 5xx other than 503 or a 503 without Retry-After:

    # capacity (closed loop at --concurrency), then half of it open-loop and 200 single
    # requests (unloaded latency), then --factor times it: 503s by reason, served latency,
    # memory over the phase; also exits 1 on a transport error
    python bench/serve_load.py --mode overload --run RUN --data DATA --factor 2.0 --seconds 60 \
        --capacity-seconds 20 --serve-arg=--max-queue-rows=4096 --out overload.json
    # SIGSTOP the model process at --stop-at s, SIGKILL its replacement at --kill-at s, under
    # --rate requests/s (default: half the capacity); exits 1 if either took over
    # --recover-within s to score again
    python bench/serve_load.py --mode fault --run RUN --data DATA --seconds 60 --stop-at 10 \
        --kill-at 35 --serve-arg=--model-timeout-ms=1000 --out fault.json
    # POST /admin/reload {"run": RUN2} at --reload-at s under load; exits 1 on any answer but
    # 200, or if a probe after the load does not get RUN2's scores (computed here)
    python bench/serve_load.py --mode reload --run RUN --data DATA --reload-run RUN2 \
        --seconds 30 --reload-at 10 --out reload.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import httpx
from serveload.bodies import Requests
from serveload.client import drive, in_process
from serveload.modes import add_mode_args, run_mode
from serveload.procs import Memory, start_server
from serveload.report import report


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
    add_mode_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode != "closed":
        return run_mode(args)
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
