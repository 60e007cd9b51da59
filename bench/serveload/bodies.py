"""Seeded request bodies for the load test: valid ones and every malformed kind in turn."""

from __future__ import annotations

import argparse
import json
import random
from typing import Any

MALFORMED = (
    "unknown_item", "zero_item", "context_level", "context_missing", "context_extra",
    "history_too_long", "too_many_candidates", "empty_candidates", "string_id", "bad_json",
    "oversize_body",
)  # fmt: skip


def real_rows(data_dir: str) -> tuple[Any, Any]:
    """(histories, context levels) of the train split, as the run reads them."""
    from mmctr.config import Config
    from mmctr.data import load_dataset

    train = load_dataset(data_dir, Config().data, ("train",))["train"]
    return train.history, train.context


class Requests:
    """Seeded request bodies: valid ones and one of each malformed kind in turn."""

    def __init__(self, model: dict[str, Any], args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        self.items = model["vocab"]["items"]
        self.context = model["vocab"]["context"]
        self.limits = model["limits"]
        self.args = args
        self.real = real_rows(args.data) if args.real_histories else None

    def valid(self) -> dict[str, Any]:
        r, a = self.rng, self.args
        if self.real is not None:
            i = r.randrange(len(self.real[0]))
            history = [int(v) for v in self.real[0][i] if v != 0]  # left-padded, oldest first
            context = dict(zip(self.context, (int(v) for v in self.real[1][i]), strict=True))
            return {
                "history": history,
                "context": context,
                "candidates": [r.randrange(1, self.items) for _ in range(a.candidates)],
            }
        return {
            "history": [r.randrange(1, self.items) for _ in range(a.history)],
            "context": {k: r.randrange(size) for k, size in self.context.items()},
            "candidates": [r.randrange(1, self.items) for _ in range(a.candidates)],
        }

    def make(self, kind: str) -> bytes:
        body = self.valid()
        col = next(iter(self.context))
        if kind == "unknown_item":
            body["candidates"][self.rng.randrange(len(body["candidates"]))] = self.items + 7
        elif kind == "zero_item":
            body["history"][0] = 0
        elif kind == "context_level":
            body["context"][col] = self.context[col]
        elif kind == "context_missing":
            del body["context"][col]
        elif kind == "context_extra":
            body["context"]["hour_of_day"] = 3
        elif kind == "history_too_long":
            body["history"] = [1] * (self.limits["max_history"] + 1)
        elif kind == "too_many_candidates":
            body["candidates"] = [1] * (self.limits["max_candidates"] + 1)
        elif kind == "empty_candidates":
            body["candidates"] = []
        elif kind == "string_id":
            body["candidates"][0] = str(body["candidates"][0])
        elif kind == "bad_json":
            return json.dumps(body).encode()[:-5]
        elif kind == "oversize_body":
            return b'{"history": [' + b"1, " * (self.limits["max_body_bytes"] // 3) + b"1]}"
        return json.dumps(body).encode()

    def plan(self, n: int) -> list[str]:
        """Request kinds in order: about ``malformed`` of them bad, spread evenly, kinds cycled."""
        bad = round(n * self.args.malformed)
        kinds = ["valid"] * (n - bad) + [MALFORMED[i % len(MALFORMED)] for i in range(bad)]
        self.rng.shuffle(kinds)
        return kinds
