"""mmctr serve's zero-downtime reload: POST /admin/reload and SIGHUP switch the answering model
to a run re-read from disk or another one, between batches, dropping no request; a reload that
fails leaves the old model answering."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import TINY_TOML
from serve_helpers import metric, model_children

import mmctr
from mmctr.config import Config

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from mmctr.serve.app import build_app  # noqa: E402
from mmctr.serve.batcher import MicroBatcher  # noqa: E402
from mmctr.serve.reload import Reloader, listen_for_sighup  # noqa: E402
from mmctr.serve.settings import ServeSettings, load_served  # noqa: E402

TOKEN = "reload-token-of-thirty-two-chars"
HISTORY, CANDIDATES = [3, 1, 4], [9, 2, 6, 5]


def body(candidates: list[int] = CANDIDATES) -> dict[str, Any]:
    return {"history": HISTORY, "context": {"likes_level": 3, "views_level": 1},
            "candidates": candidates}  # fmt: skip


def expected(run: Path, candidates: list[int] = CANDIDATES) -> np.ndarray:
    n = len(candidates)
    return np.asarray(mmctr.load_run(run).score([HISTORY] * n, candidates, [[3, 1]] * n))


def train(out: Path, data: Path, *overrides: str) -> Path:
    config = Config.from_dict(tomllib.loads(TINY_TOML))
    mmctr.train(data, config, out, overrides=["train.epochs=1", *overrides], log=lambda _: None)
    return out


def app_for(run: Path, **settings: Any) -> Any:
    return build_app(load_served(ServeSettings(run=str(run), threads=1, **settings)))


@pytest.mark.parametrize("model_process", [True, False], ids=["process", "in-process"])
def test_a_reload_under_load_drops_nothing_and_switches_the_scores(
    run: Path, retrained: Path, model_process: bool
) -> None:
    old, new = expected(run), expected(retrained)
    assert np.abs(old - new).max() > 1e-4, "the retrained run must score differently"
    with TestClient(app_for(run, model_process=model_process, deadline_ms=10_000)) as c:
        first = c.post("/v1/score", json=body()).json()
        assert np.allclose(first["scores"], old, atol=1e-6)
        # an item registered over HTTP lives in the run's bundle: reloading the run keeps it
        items = mmctr.load_run(run).items
        item = {"tags": items.tags[4].tolist(), "emb": items.emb[4].tolist()}
        (added,) = c.post("/v1/items", json={"items": [item]}).json()["ids"]
        with_item = c.post("/v1/score", json=body([added, 4])).json()["scores"]
        same = c.post("/admin/reload")
        assert same.status_code == 200, same.text
        assert same.json()["run"] == first["run"] and same.json()["generation"] == 2
        assert c.post("/v1/score", json=body([added, 4])).json()["scores"] == with_item

        answers: list[tuple[int, Any]] = []
        stop = threading.Event()

        def stream() -> None:
            while not stop.is_set():
                answer = c.post("/v1/score", json=body())
                answers.append((answer.status_code, answer.json()))

        clients = [threading.Thread(target=stream) for _ in range(3)]
        for thread in clients:
            thread.start()
        time.sleep(0.3)
        switched = c.post("/admin/reload", json={"run": str(retrained)})
        time.sleep(0.3)
        stop.set()
        for thread in clients:
            thread.join(10)
        assert switched.status_code == 200, switched.text
        new_id = switched.json()["run"]
        assert new_id.startswith("run-b@") and switched.json()["previous"] == first["run"]
        assert switched.json()["generation"] == 3
        assert len(answers) > 10 and {status for status, _ in answers} == {200}, answers[-1]
        for _, answer in answers:  # each scored whole by one model or the other
            scores = np.asarray(answer["scores"])
            assert np.allclose(scores, old, atol=1e-6) or np.allclose(scores, new, atol=1e-6)
        assert np.allclose(answers[-1][1]["scores"], new, atol=1e-6)
        after = c.post("/v1/score", json=body()).json()
        assert after["run"] == new_id and np.allclose(after["scores"], new, atol=1e-6)
        model = c.get("/v1/model").json()
        assert model["run"] == new_id and model["generation"] == 3
        assert model["loaded_at"].endswith("Z") and str(retrained) not in str(model)
        assert c.get("/ready").json()["run"] == new_id
        assert len(model_children()) == (1 if model_process else 0)  # the old one stopped
        text = c.get("/metrics").text
    assert metric(text, 'mmctr_reloads_total{outcome="ok"}') == 2
    assert metric(text, 'mmctr_reloads_total{outcome="failed"}') == 0
    assert model_children() == []


def test_a_failing_reload_leaves_the_old_model_answering(
    run: Path, tiny_data_master: Path, tmp_path: Path
) -> None:
    other = train(tmp_path / "other", tiny_data_master,
                  "data.item_feature_cols=likes_level,views_level")  # fmt: skip
    broken = tmp_path / "broken"
    shutil.copytree(run, broken)
    (broken / "model.pt").write_bytes(b"not a checkpoint")
    old = expected(run)
    with TestClient(app_for(run)) as c:
        before = c.post("/v1/score", json=body()).json()
        cases = [(tmp_path / "nowhere", 422, "is not a run folder"),
                 (other, 409, "data schema"), (broken, 422, "cannot load")]  # fmt: skip
        for target, status, message in cases:
            answer = c.post("/admin/reload", json={"run": str(target)})
            assert answer.status_code == status, answer.text
            assert answer.json()["field"] == "run" and message in answer.json()["detail"]
            still = c.post("/v1/score", json=body()).json()
            assert still["run"] == before["run"] and np.allclose(still["scores"], old, atol=1e-6)
        wrong = c.post("/admin/reload", json={"run": 7})
        assert wrong.status_code == 422
        assert c.get("/v1/model").json()["generation"] == 1
        text = c.get("/metrics").text
    assert metric(text, 'mmctr_reloads_total{outcome="failed"}') == 3
    assert metric(text, 'mmctr_reloads_total{outcome="ok"}') == 0


def test_two_reloads_at_once_the_second_is_refused(run: Path) -> None:
    app = app_for(run)

    async def go() -> list[Any]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            answers = await asyncio.gather(ac.post("/admin/reload"), ac.post("/admin/reload"))
            return [*answers, await ac.get("/metrics")]

    first, second, metrics = asyncio.run(go())
    assert sorted([first.status_code, second.status_code]) == [200, 409]
    busy = first if first.status_code == 409 else second
    assert busy.json()["field"] == "server" and "under way" in busy.json()["detail"]
    assert metric(metrics.text, 'mmctr_reloads_total{outcome="busy"}') == 1


def test_the_token_is_required(run: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    with TestClient(app_for(run, token_file=str(token_file))) as c:
        assert c.post("/admin/reload").status_code == 401
        wrong = c.post("/admin/reload", headers={"authorization": "Bearer " + "x" * 32})
        assert wrong.status_code == 401
        good = c.post("/admin/reload", headers={"authorization": f"Bearer {TOKEN}"})
        assert good.status_code == 200 and good.json()["generation"] == 2


def test_sighup_reloads_the_served_run(run: Path) -> None:
    served = load_served(ServeSettings(run=str(run), threads=1))
    batcher = MicroBatcher(served.scorer.score_groups, max_batch=64, max_wait_s=0)
    outcomes: list[str] = []
    reloader = Reloader(served, batcher, None, outcomes.append)

    async def go() -> None:
        stop = listen_for_sighup(reloader)  # the main thread: the signal handler is installed
        try:
            assert signal.getsignal(signal.SIGHUP) is not signal.SIG_DFL  # else it would kill us
            os.kill(os.getpid(), signal.SIGHUP)
            deadline = time.monotonic() + 10
            while not outcomes:
                assert time.monotonic() < deadline, "SIGHUP did not reload"
                await asyncio.sleep(0.02)
        finally:
            stop()
            await batcher.close()

    asyncio.run(go())
    assert outcomes == ["ok"] and served.generation == 2


def test_sighup_to_the_cli_server_reloads_a_run_retrained_in_place(
    run: Path, retrained: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mmctr", "serve", "--run", str(run), "--port", str(port),
           "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        before = _wait_for(f"{url}/v1/model", proc).json()
        assert before["generation"] == 1
        shutil.copytree(retrained, run, dirs_exist_ok=True)  # retrained in place
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while (now := httpx.get(f"{url}/v1/model").json())["generation"] == 1:
            assert time.monotonic() < deadline and proc.poll() is None, "SIGHUP did not reload"
            time.sleep(0.1)
        assert now["run"].startswith("run@") and now["run"] != before["run"]
        scores = httpx.post(f"{url}/v1/score", json=body()).json()["scores"]
        assert np.allclose(scores, expected(retrained), atol=1e-6)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def _wait_for(url: str, proc: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            return httpx.get(url, timeout=5)
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail("the server did not answer within 60 s")
