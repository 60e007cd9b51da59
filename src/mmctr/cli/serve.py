"""``mmctr serve``: a trained run behind HTTP (docs/serving.md); the serve extra provides the
web stack, and the run is loaded before the port opens, so a bad run folder exits 2 at once."""

from __future__ import annotations

import argparse
import logging
import os

from mmctr.cli.flags import add_precision_flag
from mmctr.errors import MmctrError
from mmctr.logs import logger

LOOPBACK = ("127.0.0.1", "localhost", "::1")

_log = logger("serve")


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``serve`` under ``sub``."""
    p = sub.add_parser("serve", help="score candidates of a trained run over HTTP")
    p.add_argument(
        "--run",
        required=True,
        action="append",
        help="run directory written by `mmctr train`; repeat it to serve an ensemble of runs "
        "(their logits combined, scored as one model)",
    )
    p.add_argument(
        "--weights",
        default="mean",
        help="an ensemble's weights: mean (default), fitted (on the data's valid split) or "
        "one number a run, e.g. 0.7,0.3",
    )
    p.add_argument(
        "--data",
        help="the data folder the run was trained on: checked against the run when given; "
        "needed only by a run that keeps no item table (items.npz: runs written before it) "
        "and by --weights fitted",
    )
    _add_process_flags(p)
    p.add_argument(
        "--max-batch", type=int, default=2048, help="(history, candidate) rows per forward pass"
    )
    p.add_argument(
        "--max-wait-ms", type=float, default=2.0, help="longest wait for a batch to fill"
    )
    p.add_argument("--max-candidates", type=int, default=1000, help="candidates per user")
    p.add_argument(
        "--max-history", type=int, default=0, help="history items per user (default: the data's)"
    )
    p.add_argument("--max-users", type=int, default=64, help="users per /v1/score/batch")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20)
    p.add_argument(
        "--max-queue-rows",
        type=int,
        default=0,
        help="rows queued or being scored; past it 503 (default 4 x --max-batch)",
    )
    p.add_argument(
        "--deadline-ms", type=float, default=1000.0, help="arrival to answer; past it 503"
    )
    p.add_argument(
        "--model-timeout-ms",
        type=float,
        default=5000.0,
        help="one call into the model process; past it the process is killed and replaced",
    )
    add_precision_flag(p)
    _add_access_flags(p)
    p.set_defaults(func=run)


def _add_process_flags(p: argparse.ArgumentParser) -> None:
    """Where it listens, and the processes and threads that answer."""
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1, help="processes, each with the model")
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads per worker (default (cores-1)/workers)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... or auto")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="run the model on a thread of the server process instead of a child process "
        "(less memory, but each pass waits for the event loop's GIL)",
    )
    p.add_argument("--access-log", action="store_true", help="log every request (slower)")


def _add_access_flags(p: argparse.ArgumentParser) -> None:
    """Who may call what, and how many items it may register (docs/serving.md, Access)."""
    p.add_argument(
        "--max-new-items", type=int, default=10_000,
        help="items registered with the run in all (POST /v1/items, mmctr items add); "
        "past it /v1/items answers 409",
    )  # fmt: skip
    p.add_argument(
        "--token-file",
        help="a file holding the bearer token that /v1/items and /admin/* require (default: "
        "the MMCTR_SERVE_TOKEN environment variable; neither: no token)",
    )
    p.add_argument(
        "--token-all", action="store_true",
        help="require the token on every route but /health, /healthz and /ready",
    )  # fmt: skip
    p.add_argument("--docs", action="store_true", help="serve /docs, /redoc and /openapi.json")


def default_threads(workers: int) -> int:
    """Torch threads per worker: the cores shared among the workers, less one for the event
    loops (HTTP and JSON), at least one. A model thread that competes with the event loop for
    a core is worse than one thread fewer: OpenMP's waiting threads spin (docs/serving.md has
    the measurement).
    """
    cores = os.cpu_count() or 1
    return max(1, (cores - 1) // workers)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from mmctr.serve import app as serve_app
        from mmctr.serve import multiproc
        from mmctr.serve.access import read_token
        from mmctr.serve.settings import ServeSettings, load_served
    except ImportError as exc:
        raise MmctrError(
            f"mmctr serve needs the serve extra ({exc.name} is missing): pip install 'mmctr[serve]'"
        ) from None
    runs = [str(r) for r in args.run]
    settings = ServeSettings(
        run=runs[0], runs=tuple(runs) if len(runs) > 1 else (), weights=args.weights,
        data=None if args.data is None else str(args.data), host=args.host, port=args.port,
        workers=args.workers, threads=args.threads or default_threads(args.workers),
        device=args.device, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_candidates=args.max_candidates, max_history=args.max_history,
        max_users=args.max_users, max_body_bytes=args.max_body_bytes,
        model_process=not args.in_process, precision=args.precision,
        max_queue_rows=args.max_queue_rows, deadline_ms=args.deadline_ms,
        model_timeout_ms=args.model_timeout_ms, max_new_items=args.max_new_items,
        token_file=args.token_file, token_all=args.token_all, docs=args.docs,
    )  # fmt: skip
    token = read_token(settings)  # an unusable token: exit 2 before the run is loaded
    served = load_served(settings)  # CheckpointError / DataError here: exit 2, no port opened
    if settings.workers > 1:
        multiproc.prepare()  # one /metrics for all the workers (in the environment they get)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    _log.info(
        f"mmctr serve: run {served.run_id} ({', '.join(runs)}) on http://{host}:{settings.port} "
        f"({settings.workers} worker(s) x {settings.threads} torch thread(s); batches up to "
        f"{settings.max_batch} rows, {settings.max_wait_ms:g} ms wait; at most "
        f"{settings.queue_rows} rows in flight, {settings.deadline_ms:g} ms deadline)"
    )
    if settings.host not in LOOPBACK and token is None:
        _log.warning(
            "mmctr serve: warning: listening beyond this machine with no token: anyone who "
            "reaches it may register items (--token-file, or MMCTR_SERVE_TOKEN)"
        )
    # --verbose shows uvicorn's own lifecycle lines as well
    level = "info" if _log.isEnabledFor(logging.DEBUG) else "warning"
    options = {"host": settings.host, "port": settings.port, "access_log": args.access_log,
               "log_level": level}  # fmt: skip
    try:
        if settings.workers == 1:
            uvicorn.run(serve_app.build_app(served), **options)
        else:  # each worker process loads its own copy of the model from the settings
            del served
            os.environ[serve_app.SETTINGS_ENV] = settings.to_json()
            uvicorn.run(
                "mmctr.serve.app:app_from_env", factory=True, workers=settings.workers,
                **options,
            )  # fmt: skip
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM once uvicorn has shut down cleanly
        pass
    _log.info("mmctr serve: stopped")
    return 0
