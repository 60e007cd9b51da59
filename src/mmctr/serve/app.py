"""The HTTP face of a trained run: FastAPI routes, their request and response models, and the
mapping of every refusal to a 4xx that names the field.

    POST /v1/score        {"history": [...], "context": {...}, "candidates": [...]}
    POST /v1/score/batch  {"requests": [score request, ...]}
    POST /v1/rank         a score request with an optional "top": N
    GET  /v1/model, /healthz (also /health), /ready, /metrics

Request models are strict (an id must be a JSON integer, not "12" or 12.0) and closed (an
unknown key is refused), so a typo never scores something the caller did not mean.
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
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from mmctr.ensemble import EnsembleScorer
from mmctr.errors import DataError
from mmctr.serve.batcher import MicroBatcher, ShuttingDown
from mmctr.serve.checks import BadRequest, RequestChecker
from mmctr.serve.metrics import ASGIApp, ServeMetrics, instrument
from mmctr.serve.settings import Served, ServeSettings, load_served
from mmctr.serve.worker import ModelProcess, ModelProcessError, drop_weights

SETTINGS_ENV = "MMCTR_SERVE_SETTINGS"  # how `mmctr serve --workers N` hands settings to workers
PATHS = {"/v1/score", "/v1/score/batch", "/v1/rank", "/v1/model", "/v1/items"}
PATHS |= {"/healthz", "/health", "/ready", "/metrics"}


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class ScoreRequest(_Strict):
    history: list[int] = Field(description="item ids the user interacted with, oldest first")
    context: dict[str, int] = Field(description="a level for each of the model's context columns")
    candidates: list[int] = Field(description="item ids to score")


class RankRequest(ScoreRequest):
    top: int | None = Field(default=None, ge=1, description="how many to return; default all")


class BatchRequest(_Strict):
    requests: list[ScoreRequest] = Field(description="one score request per user")


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


class NewItem(_Strict):
    tags: list[int] = Field(description="tag ids, the run's tags per item, left-padded with 0")
    emb: list[float] = Field(description="the frozen multimodal embedding (128 values)")
    levels: dict[str, int] = Field(
        default_factory=dict,
        description="item features by column (e.g. likes_level); 0 if left out",
    )


class NewItemsRequest(_Strict):
    items: list[NewItem] = Field(description="items to register, scored without a learned id")


class NewItemsResponse(BaseModel):
    ids: list[int] = Field(description="the ids given to the new items, in request order")
    run: str


def build_app(served: Served) -> ASGIApp:
    """The service for a loaded run: routes, micro-batcher, metrics and the body limit."""
    settings = served.settings
    metrics = ServeMetrics(PATHS)
    model = None
    if settings.model_process:
        scorer = served.scorer  # an ensemble's weights go along, fitted once, here
        ensemble = scorer.weights.tolist() if isinstance(scorer, EnsembleScorer) else None
        model = ModelProcess(
            settings.run if ensemble is None else list(settings.runs), settings.data,
            device=settings.device, threads=settings.threads, precision=settings.precision,
            weights=ensemble,
        )  # fmt: skip
        drop_weights(served.scorer.model)  # the child scores; this process checks requests
    batcher = MicroBatcher(
        served.scorer.score_groups if model is None else model.score_groups,
        max_batch=settings.max_batch,
        max_wait_s=settings.max_wait_ms / 1000,
        threads=settings.threads,
        on_batch=metrics.observe_batch,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if model is not None:  # before the port opens; its load error stops the server
            await asyncio.to_thread(model.start)
        yield
        await batcher.close()
        if model is not None:
            model.close()

    app = FastAPI(title="mmctr", summary=f"CTR scores of run {served.run_id}", lifespan=lifespan)
    _add_error_handlers(app)
    _add_scoring_routes(app, served, batcher, _registrar(served, model))
    _add_info_routes(app, served, metrics, model)
    if model is None:
        warm_up(served)  # the model process warms itself up
    return instrument(app, metrics, settings.max_body_bytes)


def _registrar(served: Served, model: ModelProcess | None) -> Callable[[Any, Any, Any], np.ndarray]:
    """How new items are registered: in the scorer, and in the model process when there is
    one (the scorer here then only checks requests, and must know the new ids too)."""
    scorer: Any = served.scorer  # a run's Scorer, or an ensemble's (item features: none yet)

    def register(tags: Any, emb: Any, levels: Any) -> np.ndarray:
        # levels (item features) only where there are any, so a scorer without them still works
        extra = () if levels is None else (levels,)
        if model is None:
            return scorer.add_items(tags, emb, *extra)
        ids = model.add_items(tags, emb, levels)
        mine = scorer.add_items(tags, emb, *extra)
        if not np.array_equal(ids, mine):
            raise RuntimeError(f"the model process gave ids {ids}, the server {mine}")
        return ids

    return register


def warm_up(served: Served) -> None:
    """One pass before the first request, so that it does not pay for torch's first call."""
    item = min(1, served.scorer.schema.num_items - 1)
    levels = [0] * len(served.scorer.schema.context_cols)
    served.scorer.score_groups([([item], levels, [item])])


def _add_scoring_routes(
    app: FastAPI,
    served: Served,
    batcher: MicroBatcher,
    register: Callable[[Any, Any, Any], np.ndarray],
) -> None:
    checker, run, max_users = RequestChecker(served), served.run_id, served.settings.max_users

    @app.post("/v1/score", response_model=ScoreResponse)
    async def score(req: ScoreRequest) -> ScoreResponse:
        """Click probabilities of one user's candidates."""
        probs = await batcher.score(checker.group(req.history, req.context, req.candidates))
        return ScoreResponse(scores=probs.tolist(), run=run)

    @app.post("/v1/score/batch", response_model=BatchResponse)
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
        results = await asyncio.gather(*(batcher.score(g) for g in groups))
        return BatchResponse(results=[ScoreResult(scores=p.tolist()) for p in results], run=run)

    @app.post("/v1/items", response_model=NewItemsResponse)
    async def add_items(req: NewItemsRequest) -> NewItemsResponse:
        """Register new items (cold start): later requests may score them by their new ids."""
        if not req.items or len(req.items) > served.settings.max_candidates:
            raise BadRequest("items", f"give 1..{served.settings.max_candidates} items")
        tags = [i.tags for i in req.items]
        emb = [i.emb for i in req.items]
        if len({len(t) for t in tags}) > 1 or len({len(e) for e in emb}) > 1:
            raise BadRequest("items", "every item needs the same number of tags and of values")
        levels = checker.item_levels([i.levels for i in req.items], "items")
        try:
            ids = await batcher.call(register, tags, emb, levels)
        except DataError as exc:
            raise BadRequest("items", str(exc).removeprefix("new items: ")) from None
        return NewItemsResponse(ids=ids.tolist(), run=run)

    @app.post("/v1/rank", response_model=RankResponse)
    async def rank(req: RankRequest) -> RankResponse:
        """The candidates sorted by score, highest first, cut to ``top``."""
        group = checker.group(req.history, req.context, req.candidates)
        probs = await batcher.score(group)
        order = np.argsort(-probs, kind="stable")[: req.top]
        items = np.asarray(group[2])
        top = [RankedItem(item=int(items[i]), score=float(probs[i])) for i in order]
        return RankResponse(top=top, run=run)


def _add_info_routes(
    app: FastAPI, served: Served, metrics: ServeMetrics, process: ModelProcess | None
) -> None:
    description = served.describe()

    @app.get("/healthz")
    @app.get("/health")
    async def health() -> dict[str, str]:
        """Alive: the process answers."""
        return {"status": "ok"}

    @app.get("/ready")
    async def ready() -> Any:
        """Ready: the model is loaded (it is before the server listens) and warmed up, and
        its process, when it has one, is alive (503 if it died: restart the server)."""
        if process is not None and not process.alive:
            return _error(503, "server", "the model process has died; restart the server")
        return {"ready": True, "run": served.run_id}

    @app.get("/v1/model")
    async def model() -> dict[str, Any]:
        """The run, its model and vocabularies, and this server's limits."""
        return description

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


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

    @app.exception_handler(ShuttingDown)
    async def closing(_: Request, exc: ShuttingDown) -> JSONResponse:
        return _error(503, "server", str(exc))

    @app.exception_handler(ModelProcessError)
    async def model_gone(_: Request, exc: ModelProcessError) -> JSONResponse:
        return _error(503, "server", f"{exc}; restart the server")


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
