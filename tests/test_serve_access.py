"""mmctr serve: who may call what (the bearer token, the docs), what a response may show, how
large a request may be, and new items that are bounded, checked and kept with the run."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmctr
from mmctr.cli.main import main
from mmctr.errors import ConfigError
from mmctr.training.bundle import read_bundle
from mmctr.training.lock import run_lock

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient

from mmctr.serve.access import TOKEN_ENV, read_token
from mmctr.serve.app import build_app
from mmctr.serve.settings import ServeSettings, load_served

TOKEN = "s3cret-token-of-thirty-two-chars"
CTX = {"likes_level": 3, "views_level": 1}


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def app_for(run: Path, **settings: Any) -> Any:
    return build_app(load_served(ServeSettings(run=str(run), threads=1, **settings)))


def new_item(run: Path, like: int = 4) -> dict[str, Any]:
    """An item with the tags and embedding of trained item ``like``."""
    items = read_bundle(run, mmctr.load_run(run).schema)
    assert items is not None
    return {"tags": items.items.tags[like].tolist(), "emb": items.items.emb[like].tolist()}


def score_body(candidates: list[int]) -> dict[str, Any]:
    return {"history": [3, 1, 4], "context": dict(CTX), "candidates": candidates}


def registered(run: Path) -> int:
    saved = read_bundle(run, mmctr.load_run(run).schema)
    assert saved is not None
    return saved.num_registered


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def test_the_token_guards_writes_and_the_read_routes_stay_open(run: Path, token_file: Path) -> None:
    item = {"items": [new_item(run)]}
    with TestClient(app_for(run, token_file=str(token_file))) as c:
        missing = c.post("/v1/items", json=item)
        assert missing.status_code == 401 and missing.json()["field"] == "authorization"
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = c.post("/v1/items", json=item, headers=bearer(TOKEN[:-1] + "X"))
        assert wrong.status_code == 401 and "invalid_token" in wrong.headers["www-authenticate"]
        assert c.post("/v1/items", json=item, headers={"authorization": TOKEN}).status_code == 401
        assert registered(run) == 0, "a refused registration keeps nothing"
        right = c.post("/v1/items", json=item, headers=bearer(TOKEN))
        assert right.status_code == 200, right.text
        assert c.post("/admin/reload", headers=bearer("x" * 32)).status_code == 401
        assert c.post("/v1/score", json=score_body([1, 2])).status_code == 200
        for path in ("/v1/model", "/metrics", "/health", "/healthz", "/ready"):
            assert c.get(path).status_code == 200, path
        assert 'path="/v1/items",status="401"' in c.get("/metrics").text


def test_token_all_guards_every_route_but_the_probes(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the token from the environment
    with TestClient(app_for(run, token_all=True)) as c:
        assert c.post("/v1/score", json=score_body([1])).status_code == 401
        assert c.get("/v1/model").status_code == 401 and c.get("/metrics").status_code == 401
        assert c.post("/v1/score", json=score_body([1]), headers=bearer(TOKEN)).status_code == 200
        assert c.get("/ready").status_code == 200 and c.get("/healthz").status_code == 200


def test_unusable_tokens_are_refused(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    short, empty = tmp_path / "short", tmp_path / "empty"
    short.write_text("abc")
    empty.write_text("\n")
    cases = [
        ({"token_file": str(short)}, "at least 16 characters"),
        ({"token_file": str(empty)}, "holds no token"),
        ({"token_file": str(tmp_path / "none")}, "cannot read it"),
        ({"token_all": True}, "--token-all needs a token"),
    ]
    for options, words in cases:
        with pytest.raises(ConfigError, match=words):
            read_token(ServeSettings(run=str(run), **options))
    assert read_token(ServeSettings(run=str(run))) is None
    assert main(["serve", "--run", str(run), "--token-file", str(short)]) == 2
    assert "at least 16 characters" in capsys.readouterr().err


def test_docs_are_off_unless_asked_for(run: Path) -> None:
    with TestClient(app_for(run)) as c:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code == 404, path
    with TestClient(app_for(run, docs=True)) as c:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(path).status_code == 200, path
        schema = c.get("/openapi.json").json()["components"]["schemas"]
        assert schema["ScoreRequest"]["properties"]["candidates"]["maxItems"] == 1000


def test_no_response_shows_a_file_path(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mmctr.training import registration

    monkeypatch.setattr(registration, "LOCK_WAIT_S", 0.1)
    with TestClient(app_for(run)) as c:
        info = c.get("/v1/model")
        assert "run_dir" not in info.json() and info.json()["run"].startswith("run@")
        with run_lock(run):  # another writer (here: this test) holds the run
            busy = c.post("/v1/items", json={"items": [new_item(run)]})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
    for text in (info.text, busy.text):
        assert str(run.parent) not in text and "/tmp" not in text


def test_the_item_cap(run: Path) -> None:
    item, n = new_item(run), mmctr.load_run(run).num_items
    with TestClient(app_for(run, max_new_items=3)) as c:
        assert c.post("/v1/items", json={"items": [item] * 2}).json()["ids"] == [n, n + 1]
        over = c.post("/v1/items", json={"items": [item] * 2})
        assert over.status_code == 409 and over.json()["field"] == "items"
        assert "--max-new-items" in over.json()["detail"] and "at most 3" in over.json()["detail"]
        assert registered(run) == 2, "nothing of the refused request is kept"
        assert c.post("/v1/items", json={"items": [item]}).json()["ids"] == [n + 2]
        assert c.post("/v1/items", json={"items": [item]}).status_code == 409
    assert c.get("/v1/model").json()["limits"]["max_new_items"] == 3


def test_values_are_checked_as_float32(run: Path, tmp_path: Path) -> None:
    item = new_item(run)
    huge = {**item, "emb": [*item["emb"][:5], 1e300, *item["emb"][6:]]}
    with TestClient(app_for(run)) as c:
        refused = c.post("/v1/items", json={"items": [item, huge]})
        assert refused.status_code == 422, refused.text
        assert refused.json()["field"] == "items[1].emb[5]" and "float32" in refused.text
        short = c.post("/v1/items", json={"items": [{**item, "emb": item["emb"][:5]}]})
        assert short.status_code == 422 and short.json()["field"] == "items[0].emb"
        tag = c.post("/v1/items", json={"items": [{**item, "tags": [10**30] * len(item["tags"])}]})
        assert tag.status_code == 422 and tag.json()["field"] == "items[0].tags[0]"
    assert registered(run) == 0
    path = tmp_path / "huge.parquet"
    pq.write_table(pa.table({"item_tags": [item["tags"]], "item_emb": [huge["emb"]]}), path)
    assert main(["items", "add", "--run", str(run), "--items", str(path)]) == 2


def test_registrations_survive_a_restart(run: Path) -> None:
    item = new_item(run, like=7)
    with TestClient(app_for(run, model_process=True)) as c:  # the CLI's default
        (new,) = c.post("/v1/items", json={"items": [item]}).json()["ids"]
        before = c.post("/v1/score", json=score_body([new, 7])).json()["scores"]
    with TestClient(app_for(run)) as c:  # a new server on the same run
        after = c.post("/v1/score", json=score_body([new, 7])).json()["scores"]
        assert c.post("/v1/items", json={"items": [item]}).json()["ids"] == [new + 1]
    assert np.abs(np.asarray(after) - np.asarray(before)).max() <= 1e-6
    scorer = mmctr.load_run(run)
    assert scorer.num_items == new + 2
    assert np.allclose(scorer.score([[3, 1, 4]], [new], [[3, 1]]), before[0], atol=1e-6)


def test_ids_are_shared_with_items_add_in_either_order(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    item, n = new_item(run, like=9), mmctr.load_run(run).num_items
    path = tmp_path / "new.parquet"
    pq.write_table(pa.table({"item_tags": [item["tags"]] * 2, "item_emb": [item["emb"]] * 2}), path)

    def items_add() -> list[int]:
        assert main(["items", "add", "--run", str(run), "--items", str(path), "--json"]) == 0
        ids: list[int] = json.loads(capsys.readouterr().out)["ids"]
        return ids

    with TestClient(app_for(run)) as c:
        first = items_add()  # while the server runs
        second = c.post("/v1/items", json={"items": [item]}).json()["ids"]
        third = items_add()
        fourth = c.post("/v1/items", json={"items": [item]}).json()["ids"]
        every = [*first, *second, *third, *fourth]
        assert every == list(range(n, n + 6)), "no id handed out twice"
        scores = c.post("/v1/score", json=score_body(every)).json()["scores"]
    assert np.allclose(scores, scores[0], atol=1e-6), "the same item under every id"
    assert registered(run) == 6


def test_oversized_requests_are_refused_early_and_briefly(run: Path) -> None:
    with TestClient(app_for(run, max_candidates=50, max_body_bytes=4 << 20)) as c:
        cases = [
            ("/v1/score", score_body(list(range(1, 200_001))), "candidates", "at most 50"),
            ("/v1/score", score_body(["x"] * 200_000), "candidates[0]", "integer"),
            ("/v1/score", {**score_body([1]), "history": [1] * 100_000}, "history", "at most"),
            ("/v1/score/batch", {"requests": [score_body([1])] * 10_000}, "requests", "at most 64"),
            ("/v1/items", {"items": [{"tags": [1] * 100_000, "emb": []}]}, "items[0].tags",
             "at most"),
        ]  # fmt: skip
        for path, body, field, words in cases:
            start = time.perf_counter()
            answer = c.post(path, json=body)
            seconds = time.perf_counter() - start
            assert answer.status_code == 422 and answer.json()["field"] == field, answer.text
            assert words in answer.json()["detail"] and len(answer.content) < 300
            assert seconds < 2.0, (path, field, seconds)


def test_appending_items_writes_beside_the_live_table(run: Path) -> None:
    scorer = mmctr.load_run(run, device="cpu")
    table, tags, emb = scorer.model.items, scorer.items.tags[4:6], scorer.items.emb[4:6]
    scorer.add_items(tags, emb, room=10)  # the table moves once, with room for 10 more
    buffer = table.item_emb.data_ptr()
    ids = scorer.add_items(tags, emb, room=10)
    assert table.item_emb.data_ptr() == buffer, "the second registration copied its rows alone"
    again = scorer.add_items(tags, emb, first=int(ids[0]))  # held already: nothing added
    assert again.tolist() == ids.tolist() and scorer.num_items == ids[-1] + 1
    plain = mmctr.load_run(run, device="cpu")
    plain.add_items(np.concatenate([tags, tags]), np.concatenate([emb, emb]))
    new = list(range(ids[-1] - 3, ids[-1] + 1))
    want = plain.score([[3, 1, 4]] * 4, new, [[3, 1]] * 4)
    assert np.array_equal(scorer.score([[3, 1, 4]] * 4, new, [[3, 1]] * 4), want)
