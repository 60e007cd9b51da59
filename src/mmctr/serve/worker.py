"""The model in a process of its own, so that its forward passes never wait for the event loop.

A forward pass in eager PyTorch is a few hundred operator calls, and each call takes Python's
GIL back. In one process the event loop (HTTP, JSON, validation) holds that lock while it
works, so the model thread spends its passes waiting (docs/serving.md measures how much). A
child process has its own interpreter and lock; the serving process sends
it the batch's groups over a pipe (a few kilobytes) and waits for the scores, which releases
the GIL while it waits.

The child loads the run itself (``load_run``, or ``load_ensemble`` for several), warms up,
and answers ``score_groups`` and ``add_items`` calls in order until it is told to stop or its
pipe closes (its parent died). An exception in the child comes back and is raised in the
caller as it was. Watching it (a deadline on each call, restarts) is ``supervisor.py``'s job;
this module only starts, calls, kills and stops one process.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import torch
from torch import nn

from mmctr.api import Group, load_run
from mmctr.ensemble import load_ensemble
from mmctr.errors import MmctrError
from mmctr.runtime import keep_freed_memory, release_freed_memory

STOP = "stop"
OPS = ("score_groups", "add_items")  # the Scorer methods the child answers
READY_TIMEOUT_S = 600.0  # loading the paper configuration on a slow disk takes a while
STOP_GRACE_S = 1.0  # how long a child asked to stop may take before it is killed


class ModelProcessError(MmctrError):
    """The model process died or could not start."""


def _serve(
    conn: Connection,
    run: str | list[str],
    data: str | None,
    device: str,
    threads: int,
    precision: str,
    weights: list[float] | None = None,
) -> None:
    """The child: load (a list of runs: an ensemble with ``weights``), warm up, then answer
    calls until told to stop."""
    # Ctrl-C, and a service manager's SIGTERM to the whole group: the parent stops us (or, if
    # it is gone, our pipe closes); answering them here would look like a crash to the parent
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # so does a hangup; the parent reloads (reload.py)
    keep_freed_memory()
    if threads > 0:
        torch.set_num_threads(threads)
    try:
        scorer = (
            load_run(run, data, device=device, precision=precision)
            if isinstance(run, str)
            else load_ensemble(run, data, weights, device=device, precision=precision)
        )
        first = min(1, scorer.schema.num_items - 1)
        scorer.score_groups([([first], [0] * len(scorer.schema.context_cols), [first])])
    except Exception as exc:
        conn.send(("error", _portable(exc)))
        return
    conn.send(("ready", scorer.num_items))  # with the items it loaded (registered ones too)
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):  # the parent went away
            return
        if op == STOP:
            return
        try:
            if op not in OPS:
                raise ValueError(f"the model process does not answer {op!r}")
            conn.send(("ok", getattr(scorer, op)(*args)))
        except Exception as exc:
            conn.send(("error", _portable(exc)))


def drop_weights(model: nn.Module) -> None:
    """Free the weights of a model this process no longer runs: with a model process the
    server only checks requests and registers items, which need the item table (buffers,
    kept), not the weights (1 GB at the paper configuration)."""
    with torch.no_grad():
        for param in model.parameters():
            param.data = torch.empty(0, dtype=param.dtype, device=param.device)
    release_freed_memory()


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


class ModelProcess:
    """A child process holding the model; its methods block until the child answers.

    ``start`` spawns it and waits until it has loaded the run (an app starts it in its
    lifespan, so that a server that never starts leaves no process behind); ``close`` stops
    it. Calls are serialised (one at a time), which the micro-batcher's single thread does
    anyway.
    """

    def __init__(
        self,
        run: str | list[str],
        data: str | None,
        *,
        device: str,
        threads: int,
        precision: str = "fp32",
        weights: list[float] | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """``run``: a run dir, or an ensemble's (a list) scored with ``weights``;
        ``timeout_s``: a call not answered within it kills the child (None: no deadline)."""
        self._args = (run, data, device, threads, precision, weights)
        self.timeout_s = timeout_s
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._killed = False  # kill() was called: a start under way gives up
        self.num_items = 0  # the items the child knows once loaded

    def start(self) -> None:
        """Spawn the child and wait for it to load; its error (e.g. CheckpointError) if not,
        and ModelProcessError if it is killed (``kill`` from another thread) meanwhile."""
        ctx = mp.get_context("spawn")  # fork would copy a parent with torch's threads running
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=_serve, args=(child, *self._args), name="mmctr-model")
        self._process.daemon = True
        self._process.start()
        child.close()
        try:
            give_up = time.monotonic() + READY_TIMEOUT_S
            while not self._conn.poll(0.1):
                if self._killed:
                    raise ModelProcessError("the model process was stopped while it loaded")
                if time.monotonic() > give_up:
                    run = self._args[0]
                    raise ModelProcessError(f"the model process did not load {run} in time")
            self.num_items = self._answer(self._conn)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def exitcode(self) -> int | None:
        return None if self._process is None else self._process.exitcode

    def kill(self) -> None:
        """SIGKILL the child (it works on a stopped one too); a call waiting on it then fails
        with ModelProcessError, and a ``start`` under way gives up."""
        self._killed = True
        if self._process is not None and self._process.pid is not None:
            self._process.kill()
            self._process.join(5)

    def score_groups(self, groups: list[Group]) -> list[np.ndarray]:
        return self._call("score_groups", groups)

    def add_items(
        self, tags: Any, emb: Any, levels: Any = None, room: int = 0, first: int | None = None
    ) -> np.ndarray:
        """``Scorer.add_items`` in the child: ``first`` makes it safe to repeat."""
        return self._call("add_items", tags, emb, levels, room, first)

    def close(self, grace_s: float = STOP_GRACE_S) -> None:
        """Ask the child to stop; kill it if it has not within ``grace_s``. A call in progress
        (the child busy, or hung) is not waited for: the child is then killed after the grace."""
        process, conn = self._process, self._conn
        if process is None or conn is None:
            return
        if self._lock.acquire(timeout=0.1):
            try:
                conn.send((STOP, ()))
            except (OSError, ValueError):
                pass
            finally:
                self._lock.release()
        process.join(grace_s)
        if process.is_alive():
            process.kill()
            process.join(5)
        conn.close()

    def _call(self, op: str, *args: Any) -> Any:
        with self._lock:
            if self._conn is None:
                raise ModelProcessError("the model process has not been started")
            try:
                self._conn.send((op, args))
                answered = self.timeout_s is None or self._conn.poll(self.timeout_s)
            except (OSError, ValueError):
                raise self._died() from None
            if not answered:
                self.kill()
                raise ModelProcessError(
                    f"the model process did not answer within {self.timeout_s:g} s and was killed"
                )
            return self._answer(self._conn)

    def _answer(self, conn: Connection) -> Any:
        try:
            status, value = conn.recv()
        except (EOFError, OSError):
            raise self._died() from None
        if status == "error":
            raise value
        return value

    def _died(self) -> ModelProcessError:
        code = None
        if self._process is not None:
            self._process.join(1)
            code = self._process.exitcode
        return ModelProcessError(f"the model process died (exit code {code})")
