"""``POST /v1/items``: new items registered with the served run, bounded, checked and kept.

A registration goes in three steps:

1. On the event loop, its values are checked and refused with 422 naming the field: each
   item's tag count and tags, its embedding's width and each value as float32 (1e300 is a
   finite float64 but inf in float32: ``items[i].emb[j]``), its features (``levels``).
2. On a thread of its own (neither the event loop nor the model's thread waits for the disk)
   ``training/registration.py`` gives the items their ids and writes them to the run's item
   bundle under the run's lock, held for that read and write alone; ``mmctr items add`` goes
   through the same code, so the two never hand out one id twice, and after a restart an id
   names the item it named before. Past ``--max-new-items`` registered with the run in all,
   409 and nothing is written; a lock that another writer (a training run) holds longer than
   ``LOCK_WAIT_S`` is 503 with ``Retry-After``.
3. Between scoring passes, on the model's thread, the new rows (and any registered since by
   ``mmctr items add`` or another worker) are written beside the live item table, which is
   then widened over them (``ItemEncoder.append_items``); the first registration moves the
   table into buffers with room for the cap, so later ones copy only their own rows. With a
   model process it gets them first, then this process's table, which checks requests.

A registration answered 503 after step 2 (the model process was being replaced) has kept its
items: they count toward the cap, and the server takes them in at its next registration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mmctr.ensemble import EnsembleScorer
from mmctr.errors import CheckpointError, DataError, RunLockedError, StorageError
from mmctr.serve.admission import Unavailable
from mmctr.serve.batcher import MicroBatcher
from mmctr.serve.checks import BadRequest, RequestChecker
from mmctr.serve.requests import NewItem, NewItemsRequest, RequestBounds
from mmctr.serve.settings import Served
from mmctr.training.registration import Registration, TooManyItems, register_items

log = logging.getLogger("mmctr.serve")
RUN_BUSY = "run_busy"  # a 503's reason: another process is writing the run folder
FLOAT32_MAX = float(np.finfo(np.float32).max)


class ItemSink(Protocol):
    """What takes the new items: a scorer, or the model process (``Scorer.add_items``)."""

    def add_items(
        self, tags: Any, emb: Any, levels: Any = None, room: int = 0, first: int | None = None
    ) -> np.ndarray: ...


class NewItemsResponse(BaseModel):
    ids: list[int] = Field(description="the ids given to the new items, in request order")
    run: str


class ItemRegistry:
    """Registers new items with the served run, one registration at a time."""

    def __init__(self, served: Served, batcher: MicroBatcher, model: ItemSink | None) -> None:
        # the scorer and run folders are read per registration: a reload swaps them
        self._served = served
        self.schema = served.scorer.schema  # a reload keeps the schema
        self.limit = served.settings.max_new_items
        self._batcher, self._model = batcher, model
        self._turn: asyncio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def known(self) -> int:
        """Registered items this server holds."""
        return self._served.scorer.num_items - self.schema.num_items

    async def register(self, tags: np.ndarray, emb: np.ndarray, levels: Any) -> np.ndarray:
        """The new items' ids, once they are kept with the run and score here."""
        loop = asyncio.get_running_loop()
        if self._turn is None or self._loop is not loop:  # a test may run an app on new loops
            self._turn, self._loop = asyncio.Lock(), loop
        async with self._turn:
            if self.known + len(tags) > self.limit:  # past the cap already: no disk needed
                raise TooManyItems(self.known, len(tags), self.limit)
            scorer = self._served.scorer  # an ensemble's runs may keep different item columns
            done = await asyncio.to_thread(
                register_items, self._served.settings.run_dirs, self.schema, tags, emb, levels,
                limit=self.limit, known=self.known,
                schemas=[m.schema for m in scorer.members]
                if isinstance(scorer, EnsembleScorer) else None,
            )  # fmt: skip
            await self._batcher.call(self._install, done)
        return done.ids

    def _install(self, done: Registration) -> None:
        """On the model's thread: the registered items from ``done.since`` on, with room
        kept for the rest of the cap; a sink that has some of them already skips those."""
        total = done.since + len(done.rows[0])
        room = max(0, self.limit - (total - self.schema.num_items))
        args = (*done.rows, room, done.since)
        scorer: ItemSink = self._served.scorer
        for sink in (self._model, scorer):
            if sink is not None:
                ids = sink.add_items(*args)
                if len(ids) and ids[-1] != total - 1:
                    raise RuntimeError(f"registered items ended at id {ids[-1]}, not {total - 1}")


def item_rows(
    items: Sequence[NewItem], checker: RequestChecker, served: Served
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(M, T) tags, (M, D) float32 embeddings and (M, C) features (None: none given, and
    the run has none), or BadRequest naming the first bad field."""
    schema = served.scorer.schema
    if not items:
        raise BadRequest("items", "is empty; give at least one item")
    for i, item in enumerate(items):
        where = f"items[{i}]"
        if len(item.tags) != schema.tags_per_item:
            raise BadRequest(f"{where}.tags", f"has {len(item.tags)} tag ids; the run's items "
                             f"have {schema.tags_per_item} (left-padded with 0)")  # fmt: skip
        if len(item.emb) != schema.emb_dim:
            raise BadRequest(f"{where}.emb", f"has {len(item.emb)} values; the run's "
                             f"embeddings have {schema.emb_dim}")  # fmt: skip
        bad = next((j for j, t in enumerate(item.tags) if not 0 <= t < schema.num_tags), None)
        if bad is not None:
            raise BadRequest(f"{where}.tags[{bad}]", f"tag {item.tags[bad]} is outside the "
                             f"run's 0..{schema.num_tags - 1}")  # fmt: skip
    wide = np.asarray([item.emb for item in items], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        emb = wide.astype(np.float32)
    bad_rows, bad_cols = np.nonzero(~np.isfinite(emb))
    if bad_rows.size:
        i, j = int(bad_rows[0]), int(bad_cols[0])
        raise BadRequest(f"items[{i}].emb[{j}]", f"{wide[i, j]!r} is not a finite float32 "
                         f"value (they lie within ±{FLOAT32_MAX:.4g})")  # fmt: skip
    tags = np.asarray([item.tags for item in items], dtype=np.int64)
    return tags, emb, checker.item_levels([item.levels for item in items], "items")


def add_item_route(
    app: FastAPI, served: Served, batcher: MicroBatcher, model: ItemSink | None,
    bounds: RequestBounds,
) -> None:  # fmt: skip
    """``POST /v1/items`` on ``app``."""
    registry, checker = ItemRegistry(served, batcher, model), RequestChecker(served)

    @app.post("/v1/items", response_model=NewItemsResponse)
    @bounds.bind
    async def add_items(req: NewItemsRequest) -> Any:
        """Register new items (cold start): later requests may score them by their new ids."""
        tags, emb, levels = item_rows(req.items, checker, served)
        try:
            ids = await registry.register(tags, emb, levels)
        except TooManyItems as exc:
            return _refused(409, f"{exc} (this server's --max-new-items); nothing was registered")
        except DataError as exc:
            raise BadRequest("items", str(exc).removeprefix("new items: ")) from None
        except RunLockedError:
            raise Unavailable(RUN_BUSY, "another process (a training run, or `mmctr items add`) "
                              "is writing the run; try again") from None  # fmt: skip
        except (CheckpointError, StorageError, OSError):  # the files, not the request
            log.exception("mmctr serve: registering %d new items failed", len(tags))
            return _refused(500, "the items could not be kept with the run (see the server's log)",
                            field="server")  # fmt: skip
        return NewItemsResponse(ids=ids.tolist(), run=served.run_id)


def _refused(status: int, message: str, field: str = "items") -> JSONResponse:
    return JSONResponse({"detail": f"{field}: {message}", "field": field}, status_code=status)
