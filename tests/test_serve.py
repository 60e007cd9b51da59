"""mmctr serve: the HTTP API on a tiny trained run, its refusals, micro-batching and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from serve_helpers import model_children

import mmctr
from mmctr.cli.main import main

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from mmctr.serve.app import build_app  # noqa: E402
from mmctr.serve.batcher import MicroBatcher  # noqa: E402
from mmctr.serve.settings import Served, ServeSettings, load_served  # noqa: E402

CTX = {"likes_level": 3, "views_level": 1}


@pytest.fixture(scope="module")
def run_dir(tiny_run_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny run: items registered over HTTP are kept with the run."""
    out = tmp_path_factory.mktemp("serve") / "run"
    shutil.copytree(tiny_run_master, out)
    return out


def served(run_dir: Path, data: Path, **limits: Any) -> Served:
    return load_served(ServeSettings(run=str(run_dir), data=str(data), threads=1, **limits))


@pytest.fixture(scope="module")
def client(run_dir: Path, tiny_data_master: Path) -> Any:
    app = build_app(served(run_dir, tiny_data_master, max_history=30, max_candidates=50))
    with TestClient(app) as c:
        yield c


def body(**changes: Any) -> dict[str, Any]:
    return {"history": [3, 1, 4, 1, 5], "context": dict(CTX), "candidates": [9, 2, 6], **changes}


def test_score_matches_the_python_scorer(client: Any, run_dir: Path, tiny_data: Path) -> None:
    answer = client.post("/v1/score", json=body())
    assert answer.status_code == 200, answer.text
    out = answer.json()
    scorer = mmctr.load_run(run_dir, tiny_data, device="cpu")
    expected = scorer.score([[3, 1, 4, 1, 5]] * 3, [9, 2, 6], [[3, 1]] * 3)
    assert np.allclose(out["scores"], expected, atol=1e-6)
    assert out["run"].startswith("run@") and len(out["run"]) == len("run@") + 12


def test_batch_form_and_rank(client: Any) -> None:
    users = [body(), body(history=[], candidates=[7, 7, 8]), body(history=list(range(1, 31)))]
    batch = client.post("/v1/score/batch", json={"requests": users})
    assert batch.status_code == 200, batch.text
    alone = [client.post("/v1/score", json=u).json()["scores"] for u in users]
    for got, want in zip(batch.json()["results"], alone, strict=True):
        assert np.allclose(got["scores"], want, atol=1e-6)
    cands = list(range(10, 40))
    scores = client.post("/v1/score", json=body(candidates=cands)).json()["scores"]
    ranked = client.post("/v1/rank", json=body(candidates=cands, top=5)).json()["top"]
    order = np.argsort(-np.asarray(scores), kind="stable")[:5]
    assert [r["item"] for r in ranked] == [cands[i] for i in order]
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    everything = client.post("/v1/rank", json=body(candidates=cands)).json()["top"]
    assert len(everything) == len(cands)


def test_concurrent_requests_share_a_pass_and_get_their_own_scores(
    run_dir: Path, tiny_data_master: Path
) -> None:
    users = [body(history=list(range(1, 2 + 3 * i)), candidates=[5 + i, 40, 2 * i + 1])
             for i in range(10)]  # fmt: skip
    alone_app = build_app(served(run_dir, tiny_data_master, max_wait_ms=0))
    with TestClient(alone_app) as c:
        alone = [c.post("/v1/score", json=u).json()["scores"] for u in users]
    batching = served(run_dir, tiny_data_master, max_wait_ms=500)
    app = build_app(batching)

    async def together() -> list[list[float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as ac:
            answers = await asyncio.gather(*(ac.post("/v1/score", json=u) for u in users))
            metrics = (await ac.get("/metrics")).text
        assert "mmctr_batch_requests_count 1.0" in metrics  # all ten in one forward pass
        return [a.json()["scores"] for a in answers]

    for got, want in zip(asyncio.run(together()), alone, strict=True):
        assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-6


@pytest.mark.parametrize(
    ("change", "status", "field", "words"),
    [
        ({"candidates": [9, 4000]}, 422, "candidates[1]", "not a known item"),
        ({"candidates": [0]}, 422, "candidates[0]", "not a known item"),
        ({"candidates": [2**80]}, 422, "candidates[0]", "not a known item"),
        ({"history": [1, -3]}, 422, "history[1]", "not a known item"),
        ({"context": {"likes_level": 99, "views_level": 1}}, 422, "context.likes_level",
         "outside the vocabulary"),
        ({"context": {"likes_level": 1}}, 422, "context.views_level", "missing"),
        ({"context": {**CTX, "hour": 3}}, 422, "context.hour", "not a context column"),
        ({"history": list(range(1, 32))}, 422, "history", "at most 30"),
        ({"candidates": list(range(1, 52))}, 422, "candidates", "at most 50"),
        ({"candidates": []}, 422, "candidates", "empty"),
        ({"candidates": [1, "2"]}, 422, "candidates[1]", "integer"),
        ({"candidates": [1, 2.0]}, 422, "candidates[1]", "integer"),
        ({"candidates": [True]}, 422, "candidates[0]", "integer"),
        ({"history": "1 2 3"}, 422, "history", "list"),
        ({"context": [3, 1]}, 422, "context", "dictionary"),
        ({"candidates": None}, 422, "candidates", "list"),
        ({"user": 7}, 422, "user", "Extra inputs"),
        ({"top": 0}, 422, "top", "greater than or equal to 1"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(
    client: Any, change: dict[str, Any], status: int, field: str, words: str
) -> None:
    path = "/v1/rank" if "top" in change else "/v1/score"
    answer = client.post(path, json=body(**change))
    assert answer.status_code == status, answer.text
    out = answer.json()
    assert out["field"] == field
    assert out["detail"].startswith(f"{field}: ") and words in out["detail"]


def test_bad_bodies_and_batches(client: Any) -> None:
    missing = {k: v for k, v in body().items() if k != "candidates"}
    cases = [
        ("/v1/score", {"json": missing}, 422, "candidates"),
        ("/v1/score", {"content": b"{nope", "headers": {"content-type": "application/json"}},
         400, "body"),
        ("/v1/score", {"content": b"[" + b"1," * 600_000 + b"1]"}, 413, "body"),
        ("/v1/score/batch", {"json": {"requests": []}}, 422, "requests"),
        ("/v1/score/batch", {"json": {"requests": [body()] * 65}}, 422, "requests"),
        ("/v1/score/batch", {"json": {"requests": [body(), body(candidates=[0])]}}, 422,
         "requests[1].candidates[0]"),
        ("/v1/score/batch", {"json": {"requests": [body(), {"history": []}]}}, 422,
         "requests[1].context"),
    ]  # fmt: skip
    for path, kwargs, status, field in cases:
        answer = client.post(path, **kwargs)
        assert answer.status_code == status, (path, answer.text)
        assert answer.json()["field"] == field
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/score").status_code == 405


def test_info_routes_and_metrics(client: Any) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/health").status_code == 200
    assert client.get("/ready").json()["ready"] is True
    model = client.get("/v1/model").json()
    assert model["context_columns"] == ["likes_level", "views_level"]
    assert model["limits"]["max_history"] == 30 and model["limits"]["max_candidates"] == 50
    assert model["vocab"]["items"] > 1 and set(model["vocab"]["context"]) == set(CTX)
    before = client.get("/metrics").text
    client.post("/v1/score", json=body(candidates=[1, 2, 3, 4]))
    client.post("/v1/score", json=body(candidates=[]))
    text = client.get("/metrics").text
    assert "text/plain" in client.get("/metrics").headers["content-type"]
    for name in ("mmctr_request_seconds_bucket", "mmctr_batch_rows_bucket",
                 "mmctr_batch_requests_bucket", "mmctr_forward_seconds_count"):  # fmt: skip
        assert name in text
    assert _value(text, 'mmctr_requests_total{path="/v1/score",status="200"}') == 1 + _value(
        before, 'mmctr_requests_total{path="/v1/score",status="200"}'
    )
    assert _value(text, "mmctr_candidates_scored_total") == 4 + _value(
        before, "mmctr_candidates_scored_total"
    )
    assert _value(text, 'mmctr_requests_total{path="/v1/score",status="422"}') >= 1


def _value(text: str, series: str) -> float:
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return 0.0


def test_score_groups_equal_score(run_dir: Path, tiny_data_master: Path) -> None:
    scorer = mmctr.load_run(run_dir, tiny_data_master, device="cpu")
    groups = [([1, 2, 3], [3, 1], [4, 5]), ([], [0, 2], [6]), (list(range(1, 40)), [1, 1], [7])]
    got = scorer.score_groups(groups)
    for (hist, ctx, cands), probs in zip(groups, got, strict=True):
        want = scorer.score([hist] * len(cands), cands, [ctx] * len(cands))
        assert probs.shape == (len(cands),) and np.allclose(probs, want, atol=1e-6)


def test_a_failing_request_does_not_fail_its_batch() -> None:
    def score(groups: list[Any]) -> list[np.ndarray]:
        if any(g[0] == "bad" for g in groups):
            raise RuntimeError("boom")
        return [np.full(len(g[2]), float(g[0])) for g in groups]

    async def go() -> list[Any]:
        batcher = MicroBatcher(score, max_batch=100, max_wait_s=0.2)
        calls = [batcher.score((str(i), [], [0] * (i + 1))) for i in range(4)]
        calls.append(batcher.score(("bad", [], [0])))
        out = await asyncio.gather(*calls, return_exceptions=True)
        await batcher.close()
        return out

    *good, bad = asyncio.run(go())
    assert [list(g) for g in good] == [[float(i)] * (i + 1) for i in range(4)]
    assert isinstance(bad, RuntimeError)


def test_cli_binds_loopback_by_default(
    run_dir: Path, tiny_data_master: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import uvicorn

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    assert main(["serve", "--run", str(run_dir), "--data", str(tiny_data_master)]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8000
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("mmctr serve: run run@") and "on http://127.0.0.1:8000" in line


def test_cli_workers_load_the_model_in_each_process(
    run_dir: Path, tiny_data_master: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import uvicorn

    from mmctr.serve import app as serve_app

    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.setenv(serve_app.SETTINGS_ENV, "")  # restored (unset) after the test
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(run_dir.parent / "metrics"))  # likewise
    args = ["serve", "--run", str(run_dir), "--data", str(tiny_data_master), "--workers", "2"]
    assert main([*args, "--max-wait-ms", "7"]) == 0
    assert (
        seen["app"] == "mmctr.serve.app:app_from_env" and seen["factory"] and seen["workers"] == 2
    )
    settings = ServeSettings.from_json(os.environ[serve_app.SETTINGS_ENV])
    assert settings.max_wait_ms == 7 and settings.workers == 2 and settings.threads >= 1
    monkeypatch.setenv(serve_app.SETTINGS_ENV, settings.to_json())
    with TestClient(serve_app.app_from_env()) as c:  # what each worker builds
        assert c.post("/v1/score", json=body()).status_code == 200


def test_cli_refuses_a_bad_run_folder(
    tmp_path: Path, tiny_data_master: Path, run_dir: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not listen"))
    assert main(["serve", "--run", str(tmp_path / "nope"), "--data", str(tiny_data_master)]) == 2
    assert "run directory not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["serve", "--run", str(tmp_path / "empty"), "--data", str(tiny_data_master)]) == 2
    assert "holds no trained model" in capsys.readouterr().err
    args = ["serve", "--run", str(run_dir), "--data", str(tiny_data_master)]
    assert main([*args, "--max-candidates", "5000"]) == 2
    assert "exceeds --max-batch" in capsys.readouterr().err


def test_server_process_answers_and_stops_on_sigterm(run_dir: Path, tiny_data_master: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mmctr", "serve", "--run", str(run_dir), "--data",
           str(tiny_data_master), "--port", str(port), "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        answer = _wait_for(f"http://127.0.0.1:{port}/v1/score", proc)
        assert answer.status_code == 200 and len(answer.json()["scores"]) == 3
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"on http://127.0.0.1:{port}" in out


def _wait_for(url: str, proc: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            return httpx.post(url, json=body(), timeout=5)
        except httpx.TransportError:
            time.sleep(0.2)
    pytest.fail("the server did not answer within 60 s")


def test_settings_round_trip() -> None:
    settings = ServeSettings(run="r", data="d", max_wait_ms=1.5, workers=2, precision="int8")
    assert ServeSettings.from_json(settings.to_json()) == settings
    assert json.loads(settings.to_json())["host"] == "127.0.0.1"
    with pytest.raises(mmctr.errors.ConfigError, match="--precision 'fp16'"):
        ServeSettings(run="r", data="d", precision="fp16")


def test_a_bf16_server_says_so_and_scores_close_to_fp32(
    client: Any, run_dir: Path, tiny_data_master: Path
) -> None:
    want = client.post("/v1/score", json=body()).json()["scores"]
    service = served(run_dir, tiny_data_master, max_history=30, precision="bf16")
    with TestClient(build_app(service)) as c:
        assert c.get("/v1/model").json()["model"]["precision"] == "bf16"
        got = c.post("/v1/score", json=body()).json()["scores"]
    assert np.abs(np.asarray(got) - np.asarray(want)).max() < 0.02


def test_new_items_register_and_score_like_their_features(
    run_dir: Path, tiny_data_master: Path
) -> None:
    service = served(run_dir, tiny_data_master)
    items = service.scorer.items
    n = service.scorer.num_items
    new = {"tags": items.tags[4].tolist(), "emb": items.emb[4].tolist()}
    with TestClient(build_app(service)) as c:
        assert c.post("/v1/score", json=body(candidates=[n])).status_code == 422  # not yet
        answer = c.post("/v1/items", json={"items": [new, new]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["ids"] == [n, n + 1]
        scores = c.post("/v1/score", json=body(candidates=[n, n + 1, 4])).json()["scores"]
        assert scores[0] == scores[1], "two items with the same features score the same"
        bad_tag = {"tags": [10**6] * len(new["tags"]), "emb": new["emb"]}
        refused = c.post("/v1/items", json={"items": [bad_tag]})
        assert refused.status_code == 422 and refused.json()["field"] == "items[0].tags[0]"
        assert "is outside the run's" in refused.json()["detail"]
        short = {"tags": new["tags"], "emb": new["emb"][:5]}
        assert c.post("/v1/items", json={"items": [short]}).status_code == 422
        assert c.post("/v1/items", json={"items": []}).status_code == 422


def test_model_process_scores_registers_items_and_stops(
    client: Any, run_dir: Path, tiny_data_master: Path
) -> None:
    # the CLI's default: the model in a child process, out of the event loop's GIL
    service = served(run_dir, tiny_data_master, max_history=30, max_candidates=50,
                     model_process=True)  # fmt: skip
    users = [body(), body(history=[], candidates=[7, 7, 8]), body(history=list(range(1, 31)))]
    in_thread = [client.post("/v1/score", json=u).json()["scores"] for u in users]
    items, n = service.scorer.items, service.scorer.num_items
    new = {"tags": items.tags[4].tolist(), "emb": items.emb[4].tolist()}
    reference = mmctr.load_run(run_dir, tiny_data_master, device="cpu")
    reference.add_items([new["tags"]], [new["emb"]])
    expected = reference.score_groups([(body()["history"], [3, 1], [n, 4])])[0]
    app = build_app(service)
    assert all(p.numel() == 0 for p in service.scorer.model.parameters()), "weights freed"
    with TestClient(app) as c:
        assert len(model_children()) == 1
        assert c.get("/ready").json()["ready"] is True
        assert c.get("/v1/model").json()["model"]["parameters"] == service.scorer.parameter_count
        for u, want in zip(users, in_thread, strict=True):
            got = c.post("/v1/score", json=u).json()["scores"]
            assert np.abs(np.asarray(got) - np.asarray(want)).max() <= 1e-6
        assert c.post("/v1/items", json={"items": [new]}).json()["ids"] == [n]
        got = c.post("/v1/score", json=body(candidates=[n, 4])).json()["scores"]
        assert np.abs(np.asarray(got) - expected).max() <= 1e-6
        assert c.post("/v1/score", json=body(candidates=[n + 1])).status_code == 422
        # a model process that dies: scoring answers 503 and the server is no longer ready
        (child,) = model_children()
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        gone = c.post("/v1/score", json=body())
        assert gone.status_code == 503 and "model process died" in gone.json()["detail"]
        assert c.get("/ready").status_code == 503
        assert c.get("/health").status_code == 200
    assert model_children() == []


def test_a_model_process_that_cannot_load_raises_the_childs_error(
    tmp_path: Path, tiny_data_master: Path
) -> None:
    from mmctr.errors import CheckpointError
    from mmctr.serve.worker import ModelProcess, ModelProcessError

    process = ModelProcess(str(tmp_path / "no-run"), str(tiny_data_master), device="cpu", threads=1)
    with pytest.raises(ModelProcessError, match="has not been started"):
        process.score_groups([([1], [0, 0], [1])])
    with pytest.raises(CheckpointError, match="no-run"):
        process.start()
    assert not process.alive and model_children() == []
