"""The HTTP face of a trained run: FastAPI routes, their request and response models, and the
mapping of every refusal to a 4xx that names the field.

    POST /v1/score        {"history": [...], "context": {...}, "candidates": [...]}
    POST /v1/score/batch  {"requests": [score request, ...]}
    POST /v1/rank         a score request with an optional "top": N
    POST /v1/items        {"items": [{"tags": [...], "emb": [...]}, ...]}  (registry.py)
    POST /admin/reload    {"run": "runs/b"} or nothing: the served run, re-read (reload.py)
    GET  /v1/model, /healthz (also /health), /ready, /metrics

Request models (requests.py) are strict (an id must be a JSON integer, not "12" or 12.0),
closed (an unknown key is refused) and bounded by the server's limits; who may call what is
access.py's (a bearer token, and the docs off unless asked for).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from mmctr.api import Group
from mmctr.serve.access import guard, openapi_url, read_token
from mmctr.serve.admission import Unavailable, unavailable_handler
from mmctr.serve.batcher import MicroBatcher
from mmctr.serve.checks import BadRequest, RequestChecker
from mmctr.serve.metrics import ASGIApp, ServeMetrics, instrument
from mmctr.serve.registry import add_item_route
from mmctr.serve.reload import Reloader, add_reload_route, listen_for_sighup
from mmctr.serve.requests import BatchRequest, RankRequest, RequestBounds, ScoreRequest
from mmctr.serve.settings import Served, ServeSettings, load_served, warm_up
from mmctr.serve.supervisor import model_process, readiness

SETTINGS_ENV = "MMCTR_SERVE_SETTINGS"  # how `mmctr serve --workers N` hands settings to workers
PATHS = {"/v1/score", "/v1/score/batch", "/v1/rank", "/v1/model", "/v1/items"}
PATHS |= {"/healthz", "/health", "/ready", "/metrics", "/admin/reload"}


class ScoreResponse(BaseModel):
    scores: list[float] = Field(description="click probabilities, in candidate order")
    run: str


class ScoreResult(BaseModel):
    scores: list[float]


class BatchResponse(BaseModel):
    results: list[ScoreResult] = Field(description="one per request, in request order")
    run: str


class RankedItem(BaseModel):
    item: int
    score: float


class RankResponse(BaseModel):
    top: list[RankedItem] = Field(description="highest score first; ties in candidate order")
    run: str


def build_app(served: Served) -> ASGIApp:
    """The service for a loaded run: routes, micro-batcher, metrics and the body limit."""
    settings = served.settings
    token = read_token(settings)  # a ConfigError before anything starts
    metrics = ServeMetrics(PATHS)
    model = model_process(served, metrics.restarts.inc)  # None: the model runs in this process

    def score(groups: list[Group]) -> list[np.ndarray]:  # per pass: a reload swaps the scorer
        return served.scorer.score_groups(groups)

    batcher = MicroBatcher(
        score if model is None else model.score_groups,
        max_batch=settings.max_batch,
        max_wait_s=settings.max_wait_ms / 1000,
        max_rows=settings.queue_rows,
        deadline_s=settings.deadline_ms / 1000,
        threads=settings.threads,
        on_batch=metrics.observe_batch,
        on_rows=metrics.rows_in_flight.set,
    )
    reloader = Reloader(served, batcher, model, metrics.count_reload)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if model is not None:  # before the port opens; its load error stops the server
            await asyncio.to_thread(model.start)
        stop_listening = listen_for_sighup(reloader)
        yield
        stop_listening()
        reloader.close()
        await batcher.close()
        if model is not None:
            model.close()

    app = FastAPI(title="mmctr", summary=f"CTR scores of run {served.run_id}", lifespan=lifespan,
                  openapi_url=openapi_url(settings))  # fmt: skip
    _add_error_handlers(app)
    app.add_exception_handler(Unavailable, unavailable_handler(metrics.count_unavailable))
    bounds = RequestBounds(served)
    _add_scoring_routes(app, served, batcher, bounds)
    add_item_route(app, served, batcher, model, bounds)
    add_reload_route(app, reloader)
    not_ready = readiness(model, batcher, settings.model_timeout_ms / 1000)
    _add_info_routes(app, served, metrics, not_ready)
    if model is None:
        warm_up(served)  # the model process warms itself up
    # the token is checked before the body is read (a refusal costs no body)
    return guard(instrument(app, metrics, settings.max_body_bytes), token, settings.token_all,
                 metrics)  # fmt: skip


def _add_scoring_routes(
    app: FastAPI,
    served: Served,
    batcher: MicroBatcher,
    bounds: RequestBounds,
) -> None:
    checker, max_users = RequestChecker(served), served.settings.max_users

    @app.post("/v1/score", response_model=ScoreResponse)
    @bounds.bind
    async def score(req: ScoreRequest) -> ScoreResponse:
        """Click probabilities of one user's candidates."""
        probs = await batcher.score(checker.group(req.history, req.context, req.candidates))
        return ScoreResponse(scores=probs.tolist(), run=served.run_id)

    @app.post("/v1/score/batch", response_model=BatchResponse)
    @bounds.bind
    async def score_batch(req: BatchRequest) -> BatchResponse:
        """Several users in one request; each is batched like a request of its own."""
        if not req.requests:
            raise BadRequest("requests", "is empty; give at least one score request")
        if len(req.requests) > max_users:
            raise BadRequest(
                "requests", f"has {len(req.requests)} entries; at most {max_users} are allowed"
            )
        groups = [
            checker.group(r.history, r.context, r.candidates, prefix=f"requests[{i}].")
            for i, r in enumerate(req.requests)
        ]
        results = await batcher.score_all(groups)  # admitted or refused (503) together
        scored = [ScoreResult(scores=p.tolist()) for p in results]
        return BatchResponse(results=scored, run=served.run_id)

    @app.post("/v1/rank", response_model=RankResponse)
    @bounds.bind
    async def rank(req: RankRequest) -> RankResponse:
        """The candidates sorted by score, highest first, cut to ``top``."""
        group = checker.group(req.history, req.context, req.candidates)
        probs = await batcher.score(group)
        order = np.argsort(-probs, kind="stable")[: req.top]
        items = np.asarray(group[2])
        top = [RankedItem(item=int(items[i]), score=float(probs[i])) for i in order]
        return RankResponse(top=top, run=served.run_id)


def _add_info_routes(
    app: FastAPI, served: Served, metrics: ServeMetrics, not_ready: Callable[[], str | None]
) -> None:
    @app.get("/healthz")
    @app.get("/health")
    async def health() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Any:
        """Ready: the model is loaded (it is before the server listens) and warmed up, and
        answers (503 while a model process that hung or died is replaced; supervisor.py)."""
        if (why := not_ready()) is not None:
            return _error(503, "server", why)
        return {"ready": True, "run": served.run_id}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """The run that answers (id, generation, when loaded), its model and vocabularies,
        and this server's limits."""
        return served.describe()

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(BadRequest)
    async def refused(_: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, exc.field, exc.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        if first.get("type") == "json_invalid":
            return _error(400, "body", f"is not valid JSON ({first.get('msg', '')})")
        loc = list(first.get("loc", ()))
        field = _field_path(loc[1:] if loc[:1] == ["body"] else loc)
        return _error(422, field, str(first.get("msg", "is invalid")))


def _field_path(loc: list[Any]) -> str:
    """Pydantic's location ["requests", 2, "context", "x"] as requests[2].context.x."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


def _error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse({"detail": f"{field}: {message}", "field": field}, status_code=status)


def app_from_env() -> ASGIApp:
    """The app of one uvicorn worker under ``--workers N``: settings come in the environment."""
    return build_app(load_served(ServeSettings.from_json(os.environ[SETTINGS_ENV])))
