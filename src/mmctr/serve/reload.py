"""Zero-downtime reload: ``POST /admin/reload`` and SIGHUP put a run (re-read from disk, or
another one of the same data schema) in the place of the one that answers, between batches.

A reload goes in three steps, while the old model keeps serving:

1. On a thread of its own: the run is loaded (``load_served``) and checked to have the served
   data schema (another schema would change what a request may hold: 409); with a model
   process a second one is started, which loads and warms the run up itself, else the new
   scorer is warmed up here. Any error here is the admin's input (a missing run, a bad
   checkpoint): 422, and nothing changes.
2. On the model's thread, between scoring passes (and registrations): the new process takes
   the old one's place in the supervisor (later restarts build the new run), and the served
   scorer, run id and settings are swapped; ``generation`` counts up.
3. The old process, idle since its last pass, is asked to stop (killed after a grace).

One reload at a time: a second, while one is under way, gets 409. Outcomes are counted in
``mmctr_reloads_total{outcome}``. Items registered over HTTP live in the run's bundle, so a
reload of the same run keeps them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from mmctr.serve.batcher import MicroBatcher
from mmctr.serve.settings import Served, ServeSettings, load_served, utc_now, warm_up
from mmctr.serve.supervisor import ModelSupervisor, process_maker
from mmctr.serve.worker import ModelProcess, drop_weights

log = logging.getLogger("mmctr.serve")
OK, BUSY, FAILED = "ok", "busy", "failed"
OUTCOMES = (OK, BUSY, FAILED)

_Loaded = tuple[Served, ModelProcess | None, Callable[[], ModelProcess] | None]


class ReloadRequest(BaseModel):
    """The body of ``POST /admin/reload``; none, or no ``run``: the served run, re-read."""

    model_config = ConfigDict(extra="forbid", strict=True)
    run: str | None = Field(default=None, min_length=1, max_length=4096)


class ReloadFailed(Exception):
    """A reload that did not happen; the old model still answers."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.status, self.field, self.message = status, field, message


class Reloader:
    """Reloads ``served`` in place; ``model`` is its model process (None: in this process)."""

    def __init__(
        self,
        served: Served,
        batcher: MicroBatcher,
        model: ModelSupervisor | None,
        count: Callable[[str], None],
    ) -> None:
        self._served, self._batcher, self._model, self._count = served, batcher, model, count
        self._turn: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loading: ModelProcess | None = None  # killed if the server closes meanwhile
        self._closing = False
        self._tasks: set[asyncio.Task[Any]] = set()  # SIGHUP's reloads, kept from the GC

    async def reload(self, run: str | None = None) -> dict[str, Any]:
        """What answers now (run id, generation, when loaded), or ReloadFailed."""
        loop = asyncio.get_running_loop()
        if self._turn is None or self._loop is not loop:  # a test may run an app on new loops
            self._turn, self._loop = asyncio.Lock(), loop
        if self._turn.locked():
            self._count(BUSY)
            raise ReloadFailed(409, "server", "another reload is under way; try again after it")
        await self._turn.acquire()  # free: taken at once; released by the task
        # a reload once begun runs to its end even if its caller goes away (no process left
        # loaded and unused), so it is a task of its own that the caller waits for
        task = loop.create_task(self._counted(run), name="mmctr-reload")
        self._keep(task)
        return await asyncio.shield(task)

    async def _counted(self, run: str | None) -> dict[str, Any]:
        assert self._turn is not None
        try:
            answer = await self._reload(run)
        except ReloadFailed as exc:
            self._count(FAILED)
            log.warning("mmctr serve: reload refused: %s", exc)
            raise
        finally:
            self._turn.release()
        self._count(OK)
        return answer

    def _keep(self, task: asyncio.Task[Any]) -> None:
        """Hold ``task`` until it ends (the loop keeps only weak references); its error is
        the caller's, or the log's when none waits."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def close(self) -> None:
        """The server stops: a model process still loading for a reload is killed."""
        self._closing = True
        if (loading := self._loading) is not None:
            loading.kill()

    def on_sighup(self) -> None:
        """SIGHUP: reload the served run; the outcome goes to the log."""

        async def logged() -> None:
            try:
                answer = await self.reload(None)
                log.warning("mmctr serve: SIGHUP: now serving %s", answer["run"])
            except ReloadFailed:
                pass  # logged by reload

        self._keep(asyncio.get_running_loop().create_task(logged()))

    async def _reload(self, run: str | None) -> dict[str, Any]:
        served = self._served
        settings = self._next(run)
        if self._model is not None and (why := self._model.not_ready()) is not None:
            raise ReloadFailed(409, "server", f"the model process is being replaced ({why})")
        label = "the served run" if run is None else run  # no path the admin did not give
        new, process, make = await asyncio.to_thread(self._load, settings, label)
        previous = served.run_id
        try:
            old = await self._batcher.call(self._commit, new, process, make)
        except BaseException as exc:
            if process is not None:
                process.kill()
            if isinstance(exc, ReloadFailed) or not isinstance(exc, Exception):
                raise
            raise ReloadFailed(409, "server", f"the reload could not switch over: {exc}") from None
        if old is not None:
            await asyncio.to_thread(old.close)  # idle: it answered its last pass before the switch
        log.warning("mmctr serve: reloaded: %s answers (was %s)", served.run_id, previous)
        return {"run": served.run_id, "generation": served.generation,
                "loaded_at": served.loaded_at, "previous": previous}  # fmt: skip

    def _next(self, run: str | None) -> ServeSettings:
        """The settings of the run to load: the served ones, or with ``run`` in its place."""
        settings = self._served.settings
        if run is None:
            return settings
        if settings.runs:
            raise ReloadFailed(422, "run", "an ensemble reloads its own runs: leave run out")
        if not (Path(run) / "model.pt").is_file():
            raise ReloadFailed(422, "run", f"{run} is not a run folder (it has no model.pt)")
        return dataclasses.replace(settings, run=run)

    def _load(self, settings: ServeSettings, label: str) -> _Loaded:
        """On a thread: the run loaded, checked and warmed up, with its model process."""
        try:
            new = load_served(settings)
        except Exception as exc:  # a bad run folder, or data that does not match it
            raise _failed(f"cannot load {label}", exc) from None
        served = self._served.scorer.schema.fingerprint
        if (got := new.scorer.schema.fingerprint) != served:
            raise ReloadFailed(
                409, "run", f"its data schema (fingerprint {got}) is not the served one "
                f"({served}); restart the server to serve it",
            )  # fmt: skip
        if self._model is None:
            try:
                warm_up(new)
            except Exception as exc:
                raise _failed(f"warming {label} up failed", exc) from None
            return new, None, None
        make = process_maker(new)
        process = make()
        self._loading = process
        try:
            if self._closing:
                raise ReloadFailed(409, "server", "the server is closing")
            process.start()  # the child loads and warms the run up
        except ReloadFailed:
            raise
        except Exception as exc:
            raise _failed(f"the model process of {label} failed to start", exc) from None
        finally:
            self._loading = None
        drop_weights(new.scorer.model)  # this process only checks requests
        return new, process, make

    def _commit(
        self, new: Served, process: ModelProcess | None, make: Callable[[], ModelProcess] | None
    ) -> ModelProcess | None:
        """On the model's thread, between passes: the new run answers from the next pass."""
        old = None
        if self._model is not None:
            assert process is not None and make is not None
            old = self._model.adopt(process, make)
        served = self._served
        served.scorer, served.run_id, served.settings = new.scorer, new.run_id, new.settings
        served.generation += 1
        served.loaded_at = utc_now()
        return old


def _failed(what: str, exc: Exception) -> ReloadFailed:
    """A 422 naming what failed and the error's kind; its text, which may hold the run's
    paths, goes to the log only (no response shows a file path)."""
    log.error("mmctr serve: reload: %s: %s", what, exc)
    return ReloadFailed(422, "run", f"{what}: {type(exc).__name__} (the server's log has why)")


def listen_for_sighup(reloader: Reloader) -> Callable[[], None]:
    """SIGHUP reloads the run, where this loop can take signals (the main thread of a
    single-process server); returns what undoes it."""
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reloader.on_sighup)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError):
        return lambda: None  # not the main thread (a test client), or no SIGHUP here

    def stop() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return stop


def add_reload_route(app: FastAPI, reloader: Reloader) -> None:
    """``POST /admin/reload`` on ``app`` (the token guards it: access.py)."""

    @app.post("/admin/reload")
    async def reload(req: ReloadRequest | None = None) -> Any:
        """Load a run (default: the served one, re-read) beside the one that answers, warm it
        up and switch to it between batches; on any failure the old one keeps answering."""
        try:
            return await reloader.reload(None if req is None else req.run)
        except ReloadFailed as exc:
            return JSONResponse(
                {"detail": f"{exc.field}: {exc.message}", "field": exc.field},
                status_code=exc.status,
            )
