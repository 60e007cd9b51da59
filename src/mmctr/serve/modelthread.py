"""The model's thread: one daemon thread that runs calls in order, as an ``Executor``.

``ThreadPoolExecutor`` would do the same, but the interpreter joins its threads at exit, so a
forward pass that never returns (the model on a thread of the server, ``--in-process``, stuck
or swapping) would keep the server from exiting. A thread cannot be killed; a daemon thread
is at least abandoned when the process ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class ModelThread(Executor):
    """Runs submitted calls one at a time on a daemon thread, started on the first call."""

    def __init__(self, name: str, initializer: Callable[[], None] | None = None) -> None:
        self._name = name
        self._initializer = initializer
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._shut = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new calls after shutdown")
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
            self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; the thread ends after the calls queued (``cancel_futures``: after
        the one running). ``wait``: until then."""
        with self._lock:
            self._shut = True
            thread = self._thread
        if cancel_futures:
            while True:
                try:
                    call = self._calls.get_nowait()
                except queue.Empty:
                    break
                if call is not None:
                    call[0].cancel()
        self._calls.put(None)
        if wait and thread is not None:
            thread.join()

    def _work(self) -> None:
        if self._initializer is not None:
            self._initializer()
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:  # the caller gets it, as from ThreadPoolExecutor
                future.set_exception(exc)
