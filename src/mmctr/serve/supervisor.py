"""The model process, watched: a deadline on every call, and a process that misses it or dies
is killed and replaced (with back-off) while the server answers 503.

A model process can stop answering without dying (stuck in a call, SIGSTOPped, swapping), and
then every request would wait on it. So each call into it has a deadline, ``call_timeout_s``:
the process kills itself as the caller if no answer comes in time, and a watcher thread checks
every ``WATCH_TICK_S`` that the process is alive and that no call has overrun (a call stuck
before its answer is awaited). Either way the child is SIGKILLed (which a stopped process
cannot ignore), the call in progress fails, and the server is not ready (``/ready`` 503,
scoring 503 with ``Retry-After``) until a new process has loaded, warmed up and holds the
items registered since (from the run's bundle, or given again here). Replacements in a row wait
0.5 s, 1 s, 2 s ... up to 10 s before they start, so that a run that kills its process at once
does not spin; a call answered resets the back-off. Closing never waits on a hung child: it
is killed after a short grace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mmctr.api import Group
from mmctr.ensemble import EnsembleScorer
from mmctr.serve.admission import MODEL_RESTART, Unavailable
from mmctr.serve.batcher import MicroBatcher
from mmctr.serve.settings import Served
from mmctr.serve.worker import STOP_GRACE_S, ModelProcess, ModelProcessError, drop_weights

log = logging.getLogger("mmctr.serve")

WATCH_TICK_S = 0.05  # how often the watcher looks at the call in progress and the process
WATCH_SLACK_S = 0.5  # past the call deadline, before the watcher kills a call's process itself
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 10.0


class ModelDown(Unavailable):
    """The model process hung or died, and a new one is not ready yet (503)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(MODEL_RESTART, message, retry_after_s)


def backoff_s(failures: int) -> float:
    """The wait before the ``failures``-th replacement in a row: 0.5 s doubling to 10 s."""
    return min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, failures - 1))


class ModelSupervisor:
    """A ``ModelProcess`` with the same calls, a deadline on each, and replacements.

    ``make`` builds an unstarted process (the first and every replacement); ``on_restart`` is
    called once per replacement begun (a failed load counts too)."""

    def __init__(
        self,
        make: Callable[[], ModelProcess],
        *,
        call_timeout_s: float,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self._make = make
        self.call_timeout_s = call_timeout_s
        # the process enforces the deadline on its answer; the watcher catches what that
        # cannot (a call stuck sending to a stopped child whose pipe is full)
        self._overrun_s = call_timeout_s + WATCH_SLACK_S
        self._on_restart = on_restart
        self._process: ModelProcess | None = None  # the one that answers calls while ready
        self._ready = threading.Event()
        self._down = "the model process has not been started"  # why not ready
        self._retry_at = 0.0  # time.monotonic() when the next replacement starts loading
        self._load_s = 0.0  # how long the first load took: part of Retry-After
        self._call_lock = threading.Lock()  # one call at a time; a replacement waits for it
        self._call_started: float | None = None
        self._state = threading.Lock()  # guards closing against a replacement being installed
        self._closing = threading.Event()
        self._loading: ModelProcess | None = None
        self._watcher: threading.Thread | None = None
        self._registered: list[tuple[tuple[Any, ...], np.ndarray]] = []  # replayed into new ones
        self._failures = 0  # replacements since a call was last answered
        self.restarts = 0

    def start(self) -> None:
        """Load the first process (its error is raised here, so the server does not start),
        then watch it."""
        began = time.monotonic()
        process = self._make()
        process.start()
        self._load_s = time.monotonic() - began
        self._process = process
        self._ready.set()
        self._watcher = threading.Thread(target=self._watch, name="mmctr-model-watch", daemon=True)
        self._watcher.start()

    def not_ready(self) -> str | None:
        """None while a process answers calls; else why not."""
        return None if self._ready.is_set() else self._down

    def score_groups(self, groups: list[Group]) -> list[np.ndarray]:
        return self._call("score_groups", groups)

    def add_items(
        self, tags: Any, emb: Any, levels: Any = None, room: int = 0, first: int | None = None
    ) -> np.ndarray:
        return self._call("add_items", tags, emb, levels, room, first)

    def adopt(self, new: ModelProcess, make: Callable[[], ModelProcess]) -> ModelProcess:
        """A reload (reload.py): calls go to ``new`` (started and warmed up) from now on, and
        replacements are built by ``make``; the old process is returned for the caller to
        close once idle. Called between calls; refused while a replacement is under way."""
        with self._call_lock, self._state:
            if self._closing.is_set() or not self._ready.is_set() or self._process is None:
                why = "the server is closing" if self._closing.is_set() else self._down
                raise ModelProcessError(why)
            old, self._process, self._make = self._process, new, make
            self._registered = []  # the new process read the run's items from its bundle
            self._failures = 0
        return old

    def close(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop watching and stop the process; one that hangs is killed after ``grace_s``."""
        with self._state:
            self._closing.set()
            loading = self._loading
        if loading is not None:
            loading.kill()
        if self._watcher is not None:
            self._watcher.join(grace_s + 10)  # the kills it may be in join for up to 5 s
        if self._process is not None:
            self._process.close(grace_s)

    def _call(self, op: str, *args: Any) -> Any:
        with self._call_lock:
            process = self._process
            if process is None or not self._ready.is_set():
                raise ModelDown(self._down, self._retry_after())
            self._call_started = time.monotonic()
            try:
                result = getattr(process, op)(*args)
            except ModelProcessError as exc:  # it died, or the watcher killed it for hanging
                if self._ready.is_set():  # the watcher has not seen it yet
                    self._mark_down(f"{exc}; a new one is starting")
                raise ModelDown(self._down, self._retry_after()) from None
            finally:
                self._call_started = None
            if op == "add_items":
                self._registered.append((args, result))
            self._failures = 0
            return result

    def _retry_after(self) -> float:
        return max(0.0, self._retry_at - time.monotonic()) + self._load_s

    def _mark_down(self, why: str) -> None:
        self._down = why
        self._retry_at = time.monotonic() + backoff_s(self._failures + 1)
        self._ready.clear()

    def _watch(self) -> None:
        while not self._closing.wait(WATCH_TICK_S):
            process = self._process
            assert process is not None
            if self._ready.is_set():
                started = self._call_started
                if started is not None and time.monotonic() - started > self._overrun_s:
                    self._mark_down(
                        f"the model process did not answer within {self.call_timeout_s:g} s "
                        "and was killed; a new one is starting"
                    )
                elif not process.alive and process is self._process:  # not one reloaded away
                    self._mark_down(
                        f"the model process died (exit code {process.exitcode}); "
                        "a new one is starting"
                    )
                else:
                    continue
            log.warning("mmctr serve: %s", self._down)
            process.kill()
            self._replace()

    def _replace(self) -> None:
        """Start new processes, with back-off, until one loads or the supervisor closes."""
        while not self._closing.is_set():
            self._failures += 1
            self.restarts += 1
            if self._on_restart is not None:
                self._on_restart()
            delay = backoff_s(self._failures)
            self._retry_at = time.monotonic() + delay
            if self._closing.wait(delay):
                return
            try:
                new = self._load()
            except Exception as exc:
                log.error("mmctr serve: a new model process failed to start: %s", exc)
                continue
            with self._state:
                if self._closing.is_set():
                    new.kill()
                    return
                self._process = new
            self._ready.set()
            log.warning("mmctr serve: a new model process (pid %s) is serving", new.pid)
            return

    def _load(self) -> ModelProcess:
        """A started process that knows every item registered so far; ``close`` kills it
        while it loads."""
        new = self._make()
        with self._state:
            if self._closing.is_set():
                raise ModelProcessError("the server is closing")
            self._loading = new
        try:
            new.start()
            with self._call_lock:
                self._replay(new)
        except BaseException:
            new.kill()
            raise
        finally:
            with self._state:
                self._loading = None
        return new

    def _replay(self, new: ModelProcess) -> None:
        """Register in ``new`` the items registered over HTTP that it did not load (a run may
        keep them on disk), checking that they get the same ids as before."""
        for args, ids in self._registered:
            if len(ids) and ids[0] >= new.num_items:
                again = new.add_items(*args)
                if not np.array_equal(again, ids):
                    raise ModelProcessError(f"registered items got ids {again}, not {ids}")
                new.num_items = int(ids[-1]) + 1


def model_process(served: Served, on_restart: Callable[[], None]) -> ModelSupervisor | None:
    """The watched model process of ``served`` (None: the model runs in the server). This
    process then frees its copy of the weights: it only checks requests."""
    settings = served.settings
    if not settings.model_process:
        return None
    make = process_maker(served)
    drop_weights(served.scorer.model)
    timeout_s = settings.model_timeout_ms / 1000
    return ModelSupervisor(make, call_timeout_s=timeout_s, on_restart=on_restart)


def process_maker(served: Served) -> Callable[[], ModelProcess]:
    """What builds an unstarted model process of ``served``'s run (before its weights are
    dropped here: an ensemble's weights go along, fitted once)."""
    settings, scorer = served.settings, served.scorer
    weights = scorer.weights.tolist() if isinstance(scorer, EnsembleScorer) else None
    run = settings.run if weights is None else list(settings.runs)
    timeout_s = settings.model_timeout_ms / 1000

    def make() -> ModelProcess:
        return ModelProcess(
            run, settings.data, device=settings.device, threads=settings.threads,
            precision=settings.precision, weights=weights, timeout_s=timeout_s,
        )  # fmt: skip

    return make


def readiness(
    model: ModelSupervisor | None, batcher: MicroBatcher, timeout_s: float
) -> Callable[[], str | None]:
    """What ``/ready`` asks: None when ready, else why not. With a model process: not while it
    is being replaced. On a thread of the server (which cannot be killed): not while one pass
    has run longer than ``timeout_s``; it is ready again when that pass ends."""

    def not_ready() -> str | None:
        if model is not None:
            return model.not_ready()
        seconds = batcher.pass_seconds()
        if seconds > timeout_s:
            return f"the model thread has been in one pass for {seconds:.1f} s"
        return None

    return not_ready
