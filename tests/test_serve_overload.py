"""mmctr serve under overload and faults: the queue bound and the deadline answer 503 with
Retry-After, a model process that hangs or dies is replaced by itself, and shutdown does not
wait on a stopped one. Small limits and deadlines keep each test to seconds."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_helpers import metric, model_children

import mmctr
from mmctr.cli.main import main

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from mmctr.serve import supervisor  # noqa: E402
from mmctr.serve.app import build_app  # noqa: E402
from mmctr.serve.batcher import MicroBatcher, ShuttingDown  # noqa: E402
from mmctr.serve.settings import Served, ServeSettings, load_served  # noqa: E402
from mmctr.serve.worker import ModelProcessError  # noqa: E402

CTX = {"likes_level": 3, "views_level": 1}


def body(candidates: list[int]) -> dict[str, Any]:
    return {"history": [3, 1, 4], "context": dict(CTX), "candidates": candidates}


def served(run_dir: Path, data: Path, **limits: Any) -> Served:
    return load_served(ServeSettings(run=str(run_dir), data=str(data), threads=1, **limits))


class Gate:
    """A scorer wrapper whose passes block while the gate is shut, recording what they score."""

    def __init__(self, score: Callable[[list[Any]], list[np.ndarray]]) -> None:
        self.score, self.scored = score, []
        self.entered, self.opened = threading.Event(), threading.Event()
        self.opened.set()  # open for the warm-up

    def __call__(self, groups: list[Any]) -> list[np.ndarray]:
        self.entered.set()
        assert self.opened.wait(10), "the test never opened the gate"
        self.scored.extend(list(g[2]) for g in groups)
        return self.score(groups)


def gated(run_dir: Path, data: Path, **limits: Any) -> tuple[Any, Gate]:
    """An in-process app whose model passes wait for the test."""
    service = served(run_dir, data, **limits)
    gate = Gate(service.scorer.score_groups)
    service.scorer.score_groups = gate  # type: ignore[method-assign]
    app = build_app(service)
    gate.opened.clear()
    gate.scored.clear()  # the warm-up's
    return app, gate


async def until(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        await asyncio.sleep(0.02)


async def ready_is(ac: Any, status: int) -> bool:
    return bool((await ac.get("/ready")).status_code == status)


def test_a_full_queue_answers_503_with_retry_after(
    tiny_run_master: Path, tiny_data_master: Path
) -> None:
    app, gate = gated(tiny_run_master, tiny_data_master, max_batch=4, max_candidates=4,
                      max_queue_rows=8, max_wait_ms=0, deadline_ms=10_000)  # fmt: skip

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:

            async def in_flight_is(rows: int) -> bool:
                return metric((await ac.get("/metrics")).text, "mmctr_rows_in_flight") == rows

            running = asyncio.create_task(ac.post("/v1/score", json=body([1, 2, 3])))
            await asyncio.to_thread(gate.entered.wait, 5)  # its pass holds the model thread
            queued = asyncio.create_task(ac.post("/v1/score", json=body([4, 5, 6])))
            await until(lambda: in_flight_is(6))
            full = await ac.post("/v1/score", json=body([7, 8, 9]))  # 6 + 3 > 8
            assert full.status_code == 503, full.text
            assert full.headers["retry-after"] == "1"
            assert full.json()["reason"] == "queue_full" and full.json()["field"] == "server"
            users = {"requests": [body([1]), body([2]), body([3])]}  # 6 + 3 > 8: all refused
            assert (await ac.post("/v1/score/batch", json=users)).status_code == 503
            assert await in_flight_is(6), "a refused request leaves nothing queued"
            gate.opened.set()
            assert (await running).status_code == 200 and (await queued).status_code == 200
            assert (await ac.post("/v1/score/batch", json=users)).status_code == 200
            text = (await ac.get("/metrics")).text
        assert metric(text, 'mmctr_unavailable_total{reason="queue_full"}') == 2
        assert metric(text, 'mmctr_requests_total{path="/v1/score",status="503"}') == 1
        assert metric(text, 'mmctr_unavailable_total{reason="deadline"}') == 0

    asyncio.run(go())


def test_a_slow_pass_is_answered_503_at_the_deadline(
    tiny_run_master: Path, tiny_data_master: Path
) -> None:
    app, gate = gated(tiny_run_master, tiny_data_master, max_wait_ms=0, deadline_ms=300,
                      model_timeout_ms=500)  # fmt: skip

    async def go() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            start = time.monotonic()
            running = asyncio.create_task(ac.post("/v1/score", json=body([1])))
            await asyncio.to_thread(gate.entered.wait, 5)
            queued = await ac.post("/v1/score", json=body([2]))  # behind the stuck pass
            late = await running
            elapsed = time.monotonic() - start
            for answer in (late, queued):
                assert answer.status_code == 503, answer.text
                assert answer.json()["reason"] == "deadline" and "300 ms" in answer.text
                assert answer.headers["retry-after"] == "1"
            assert 0.25 < elapsed < 2.0
            # the model thread cannot be stopped: not ready while one pass overruns
            await until(lambda: ready_is(ac, 503))
            assert "one pass" in (await ac.get("/ready")).json()["detail"]
            gate.opened.set()
            await until(lambda: ready_is(ac, 200))
            assert (await ac.post("/v1/score", json=body([3]))).status_code == 200
            text = (await ac.get("/metrics")).text
        assert gate.scored == [[1], [3]], "the request that timed out in the queue was dropped"
        assert metric(text, 'mmctr_unavailable_total{reason="deadline"}') == 2
        assert metric(text, "mmctr_rows_in_flight") == 0

    asyncio.run(go())


@pytest.mark.parametrize("sig", [signal.SIGSTOP, signal.SIGKILL])
def test_a_hung_or_dead_model_process_is_replaced(
    tiny_run_master: Path, tiny_data_master: Path, tmp_path: Path, sig: signal.Signals
) -> None:
    run_dir = tmp_path / "run"  # items registered over HTTP are kept with the run
    shutil.copytree(tiny_run_master, run_dir)
    # a model timeout well above a pass's time on a busy 2-core machine: only the signal trips it
    service = served(run_dir, tiny_data_master, model_process=True, deadline_ms=400,
                     model_timeout_ms=2000)  # fmt: skip
    items, n = service.scorer.items, service.scorer.num_items
    new = {"tags": items.tags[4].tolist(), "emb": items.emb[4].tolist()}
    with TestClient(build_app(service)) as c:
        assert c.post("/v1/items", json={"items": [new]}).json()["ids"] == [n]
        want = c.post("/v1/score", json=body([n, 4])).json()["scores"]
        (child,) = model_children()
        os.kill(child.pid, sig)
        start = time.monotonic()
        refused = c.post("/v1/score", json=body([n, 4]))
        assert time.monotonic() - start < 1.5  # the deadline, 0.4 s, and some slack
        assert refused.status_code == 503 and refused.headers["retry-after"].isdigit(), refused.text
        assert refused.json()["reason"] in ("deadline", "model_restart")
        _wait(lambda: c.get("/ready").status_code == 503, 5)
        assert "a new one is starting" in c.get("/ready").json()["detail"]
        during = c.post("/v1/score", json=body([n, 4]))
        assert during.status_code == 503 and during.json()["reason"] == "model_restart", during.text
        _wait(lambda: c.get("/ready").status_code == 200, 60)  # by itself
        again = c.post("/v1/score", json=body([n, 4]))
        assert again.status_code == 200, again.text
        assert np.abs(np.asarray(again.json()["scores"]) - want).max() <= 1e-6  # item replayed
        (replacement,) = model_children()
        assert replacement.pid != child.pid and child.exitcode == -signal.SIGKILL
        text = c.get("/metrics").text
    assert metric(text, "mmctr_model_restarts_total") == 1, text
    assert metric(text, 'mmctr_unavailable_total{reason="model_restart"}') >= 1
    assert model_children() == []


def _wait(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s"
        time.sleep(0.05)


def test_shutdown_does_not_wait_for_a_stopped_model_process(
    tiny_run_master: Path, tiny_data_master: Path
) -> None:
    service = served(tiny_run_master, tiny_data_master, model_process=True, deadline_ms=200,
                     model_timeout_ms=60_000)  # fmt: skip
    with TestClient(build_app(service)) as c:
        (child,) = model_children()
        os.kill(child.pid, signal.SIGSTOP)
        assert c.post("/v1/score", json=body([1])).status_code == 503  # its call hangs
        start = time.monotonic()
    assert time.monotonic() - start < 5
    assert model_children() == [] and child.exitcode == -signal.SIGKILL


def test_closing_answers_the_callers_and_does_not_wait_for_a_stuck_pass() -> None:
    gate = Gate(lambda groups: [np.zeros(len(g[2])) for g in groups])
    gate.opened.clear()

    async def go() -> list[Any]:
        batcher = MicroBatcher(gate, max_batch=10, max_wait_s=0)
        running = asyncio.create_task(batcher.score(([], [], [1])))
        await asyncio.to_thread(gate.entered.wait, 5)  # its pass hangs on the model thread
        queued = asyncio.create_task(batcher.score(([], [], [2])))
        await asyncio.sleep(0.05)
        await batcher.close()
        with pytest.raises(ShuttingDown):
            await batcher.score(([], [], [3]))
        return await asyncio.gather(running, queued, return_exceptions=True)

    start = time.monotonic()
    answers = asyncio.run(go())
    assert time.monotonic() - start < 2
    assert all(isinstance(a, ShuttingDown) and a.reason == "shutting_down" for a in answers), (
        answers
    )
    gate.opened.set()


class FakeProcess:
    """What the supervisor needs of a model process, with a load that may fail."""

    def __init__(self, fails: bool) -> None:
        self.fails, self.alive, self.num_items, self.pid, self.exitcode = fails, True, 9, 1, None

    def start(self) -> None:
        if self.fails:
            raise ModelProcessError("cannot load")

    def score_groups(self, groups: list[Any]) -> list[np.ndarray]:
        return [np.zeros(len(g[2])) for g in groups]

    def kill(self) -> None:
        self.alive = False

    def close(self, grace_s: float = 1.0) -> None:
        self.alive = False


def test_replacements_back_off_and_retry_until_one_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [supervisor.backoff_s(k) for k in range(1, 8)] == [0.5, 1, 2, 4, 8, 10, 10]
    monkeypatch.setattr(supervisor, "BACKOFF_FIRST_S", 0.01)
    made = [FakeProcess(fails) for fails in (False, True, True, False)]
    restarts: list[int] = []
    watched = supervisor.ModelSupervisor(
        iter(made).__next__, call_timeout_s=1, on_restart=lambda: restarts.append(1)
    )
    watched.start()
    assert watched.score_groups([([1], [0], [2, 3])])[0].shape == (2,)
    made[0].alive = False  # it died
    _wait(lambda: watched.not_ready() is not None, 2)
    with pytest.raises(supervisor.ModelDown, match="died"):
        watched.score_groups([([1], [0], [2])])
    _wait(lambda: watched.not_ready() is None, 5)
    assert len(restarts) == 3 and watched.restarts == 3  # two loads failed, the third served
    assert watched.score_groups([([1], [0], [2])])[0].shape == (1,)
    watched.close()


def test_overload_settings_and_flags(
    tiny_run_master: Path, tiny_data_master: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import uvicorn

    assert ServeSettings(run="r", max_batch=100, max_candidates=100).queue_rows == 400
    with pytest.raises(mmctr.errors.ConfigError, match="below --max-batch"):
        ServeSettings(run="r", max_batch=100, max_candidates=100, max_queue_rows=50)
    with pytest.raises(mmctr.errors.ConfigError, match="--deadline-ms"):
        ServeSettings(run="r", deadline_ms=0)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    args = ["serve", "--run", str(tiny_run_master), "--data", str(tiny_data_master)]
    flags = ["--max-batch", "64", "--max-candidates", "64", "--max-queue-rows", "100"]
    assert main([*args, *flags, "--deadline-ms", "250", "--model-timeout-ms", "900"]) == 0
    assert "at most 100 rows in flight, 250 ms deadline" in capsys.readouterr().out
