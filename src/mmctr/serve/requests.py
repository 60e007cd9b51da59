"""What a request body may be: the request models, and their lists bounded by this server's
limits, so that an oversized request is refused while it is validated.

The models are strict (an id must be a JSON integer, not "12" or 12.0) and closed (an unknown
key is refused), so a typo never scores something the caller did not mean. Each list is
bounded (``max_length``) by the server's limits: candidates by ``--max-candidates``, histories
by ``--max-history``, a batch's requests by ``--max-users``, an item's tags and embedding by
the run's widths; and validation of a list stops at its first bad element (``fail_fast``), so
a body of a hundred thousand wrong-typed ids costs one error, not a hundred thousand. The
limits are the server's, so the bounded models are made for each app (``RequestBounds``) as
subclasses of the ones here, which the routes are written against.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from mmctr.serve.settings import Served

EXTRA_KEYS = 8  # keys a context or levels object may hold beyond the model's columns: a typo
# is then refused by name ("not a context column") rather than for the object's size

Route = TypeVar("Route", bound=Callable[..., Any])


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


class NewItem(_Strict):
    tags: list[int] = Field(description="tag ids, the run's tags per item, left-padded with 0")
    emb: list[float] = Field(description="the frozen multimodal embedding (128 values)")
    levels: dict[str, int] = Field(
        default_factory=dict,
        description="item features by column (e.g. likes_level); 0 if left out",
    )


class NewItemsRequest(_Strict):
    items: list[NewItem] = Field(description="items to register, scored without a learned id")


class RequestBounds:
    """The request models of one server, their lists bounded by its limits."""

    def __init__(self, served: Served) -> None:
        schema, settings = served.scorer.schema, served.settings
        context = len(schema.context_cols) + EXTRA_KEYS
        user = {
            "history": (list[int], served.max_history),
            "context": (dict[str, int], context),
            "candidates": (list[int], settings.max_candidates),
        }
        score = _bounded(ScoreRequest, user)
        item = _bounded(NewItem, {
            "tags": (list[int], schema.tags_per_item),
            "emb": (list[float], schema.emb_dim),
            "levels": (dict[str, int], len(schema.item_feature_cols) + EXTRA_KEYS),
        })  # fmt: skip
        self.models: dict[type[BaseModel], type[BaseModel]] = {
            ScoreRequest: score,
            RankRequest: _bounded(RankRequest, user),
            BatchRequest: _bounded(BatchRequest, {"requests": (_list(score), settings.max_users)}),
            NewItem: item,
            NewItemsRequest: _bounded(
                NewItemsRequest, {"items": (_list(item), settings.max_candidates)}
            ),
        }

    def bind(self, route: Route) -> Route:
        """``route`` reading this server's bounded models in place of the ones it names.

        FastAPI builds a route's body model from the route's signature, and ``__signature__``
        is the signature that ``inspect`` reports, so the route's code and its type hints
        stay as written (a bounded model is a subclass of the one named)."""
        signature = inspect.signature(route, eval_str=True)
        params = [
            p.replace(annotation=self.models.get(p.annotation, p.annotation))
            for p in signature.parameters.values()
        ]
        route.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        return route


def _bounded(base: type[BaseModel], fields: dict[str, tuple[Any, int]]) -> type[BaseModel]:
    """A subclass of ``base`` whose ``fields`` (name: (type, most elements)) are bounded; a
    list's validation stops at its first bad element."""
    bounded: dict[str, Any] = {}
    for name, (kind, most) in fields.items():
        info = base.model_fields[name]
        options: dict[str, Any] = {"max_length": most, "description": info.description}
        if getattr(kind, "__origin__", None) is list:
            options["fail_fast"] = True
        if info.default_factory is not None:
            options["default_factory"] = info.default_factory
        bounded[name] = (kind, Field(**options))
    model: type[BaseModel] = create_model(base.__name__, __base__=base, **bounded)
    return model


def _list(model: type[BaseModel]) -> Any:
    """``list[model]`` of a model made at run time."""
    return types.GenericAlias(list, (model,))
