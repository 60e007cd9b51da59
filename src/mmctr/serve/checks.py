"""What a scoring request may hold, beyond its JSON types: ids the model knows, context levels
in its vocabularies, and the service's size limits. Each refusal names the field, so that a
caller can fix the request without reading the server's logs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from mmctr.api import Group
from mmctr.serve.settings import Served


class BadRequest(Exception):
    """A request the service refuses; ``field`` is its path in the JSON body."""

    def __init__(self, field: str, message: str, status: int = 422) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


class RequestChecker:
    """Turns one user's (history, context, candidates) into a ``Group`` or a ``BadRequest``."""

    def __init__(self, served: Served) -> None:
        schema = served.scorer.schema  # a reload keeps the schema (reload.py)
        self._served = served
        self.context = dict(zip(schema.context_cols, schema.context_vocab_sizes, strict=True))
        self.features = dict(
            zip(schema.item_feature_cols, schema.item_feature_vocab_sizes, strict=True)
        )
        self.max_history = served.max_history
        self.max_candidates = served.settings.max_candidates

    def group(
        self,
        history: Sequence[int],
        context: Mapping[str, int],
        candidates: Sequence[int],
        prefix: str = "",
    ) -> Group:
        if not candidates:
            raise BadRequest(f"{prefix}candidates", "is empty; give at least one item id")
        if len(candidates) > self.max_candidates:
            raise BadRequest(
                f"{prefix}candidates",
                f"has {len(candidates)} items; this server scores at most "
                f"{self.max_candidates} per request",
            )
        if len(history) > self.max_history:
            raise BadRequest(
                f"{prefix}history",
                f"has {len(history)} items; at most {self.max_history} are allowed (the most "
                "recent ones, oldest first)",
            )
        hist = self.item_ids(history, f"{prefix}history")
        cands = self.item_ids(candidates, f"{prefix}candidates")
        return hist, self.levels(context, f"{prefix}context"), cands

    def item_ids(self, values: Sequence[int], field: str) -> np.ndarray:
        """int64 ids, each a known item: 1..num_items-1 (0 is history padding, not an item)."""
        try:
            ids = np.asarray(values, dtype=np.int64)
        except OverflowError:  # JSON integers have no size limit
            i = next(i for i, v in enumerate(values) if not -(2**63) <= v < 2**63)
            raise BadRequest(f"{field}[{i}]", self._unknown(values[i])) from None
        bad = np.flatnonzero(self.unknown_items(ids))
        if bad.size:
            i = int(bad[0])
            raise BadRequest(f"{field}[{i}]", self._unknown(int(ids[i])))
        return ids

    @property
    def num_items(self) -> int:
        """Trained items plus any registered since (``POST /v1/items``), of the run that
        answers now."""
        return self._served.scorer.num_items

    def unknown_items(self, ids: np.ndarray) -> np.ndarray:
        """Mask of the ids the model cannot score: outside its item vocabulary, or 0."""
        result: np.ndarray = (ids < 1) | (ids >= self.num_items)
        return result

    def _unknown(self, value: int) -> str:
        return f"item id {value} is not a known item (ids 1..{self.num_items - 1})"

    def item_levels(self, levels: Sequence[Mapping[str, int]], field: str) -> np.ndarray | None:
        """New items' features (M, C) in the model's column order, a missing one 0 (unknown);
        None when the model has none and no item gives any."""
        if not self.features and not any(levels):
            return None
        out = np.zeros((len(levels), len(self.features)), dtype=np.int64)
        for i, given in enumerate(levels):
            for key, level in given.items():
                where = f"{field}[{i}].levels.{key}"
                if key not in self.features:
                    names = ", ".join(self.features) or "none"
                    raise BadRequest(where, f"is not an item feature of this model ({names})")
                size = self.features[key]
                if not 0 <= level < size:
                    raise BadRequest(where, f"level {level} is outside 0..{size - 1}")
                out[i, list(self.features).index(key)] = level
        return out

    def levels(self, context: Mapping[str, int], field: str) -> list[int]:
        """The levels in the model's column order; every column present, each in its vocabulary."""
        names = ", ".join(self.context)
        for key in context:
            if key not in self.context:
                raise BadRequest(
                    f"{field}.{key}", f"is not a context column of this model (it reads {names})"
                )
        out = []
        for name, size in self.context.items():
            if name not in context:
                raise BadRequest(f"{field}.{name}", f"is missing (the model reads {names})")
            level = context[name]
            if not 0 <= level < size:
                raise BadRequest(
                    f"{field}.{name}", f"level {level} is outside the vocabulary 0..{size - 1}"
                )
            out.append(level)
        return out
