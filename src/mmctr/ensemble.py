"""Ensembles of trained runs: several runs scored on the same rows, their logits combined.

    ens = mmctr.load_ensemble(["runs/a", "runs/b"], "data/demo")           # mean of logits
    ens = mmctr.load_ensemble(["runs/a", "runs/b"], "data/demo", weights="fitted")
    ens.evaluate("valid"); ens.predict("test"); ens.score_groups(groups)

An ``EnsembleScorer`` answers what a ``Scorer`` answers (the CLI and the server use either),
each member scoring through its own ``Scorer`` (own config, window and batch size). The
ensemble's probability is ``sigmoid(sum_i w_i * logit_i)`` in float64, with non-negative
weights summing to 1: the plain mean (``1/m`` each) or weights fitted on the valid split
(``fit_weights``). It sits beside ``api.py`` because it is built from ``api.Scorer``s, which
``training`` (below ``api``) cannot import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mmctr.api import Group, Scorer, load_run
from mmctr.config import Config
from mmctr.data import DataSchema, ItemTable, Split
from mmctr.data.schema import select_item_features
from mmctr.ensemble_checks import (
    check_pairs,
    check_runs,
    checked_weights,
    saved_config,
    union_schema,
)
from mmctr.errors import CheckpointError
from mmctr.items import check_new_item_features
from mmctr.training.metrics import logloss, split_report

Weights = str | Sequence[float] | np.ndarray | None


def combine(logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Probabilities of (rows, members) logits under ``weights``: sigmoid of their weighted
    mean, in float64."""
    z = np.asarray(logits, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)
    out: np.ndarray = 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid, without exp's overflow
    return out


def fit_weights(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the logloss of ``combine`` on labelled
    rows: (rows, members) logits, (rows,) 0/1 labels.

    The loss is convex in the weights; scipy's SLSQP minimises it over the simplex (bounds
    [0, 1], sum 1) from the mean, in float64, with the analytic gradient: deterministic, no
    randomness to seed. The result is then compared, by the reported ``logloss``, with the
    mean and with each member alone, and the best of these is kept, so that fitted weights
    never do worse on the rows they were fitted on than either.
    """
    from scipy.optimize import minimize  # scipy's slow import: only when fitting

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    rows, m = z.shape

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = z @ w
        value = float(np.mean(np.logaddexp(0.0, s) - y * s))
        return value, z.T @ (combine(z, w) - y) / rows

    mean = np.full(m, 1.0 / m)
    fit = minimize(
        loss, mean, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
        constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
        options={"ftol": 1e-12, "maxiter": 500},
    )  # fmt: skip
    fitted = np.clip(np.nan_to_num(fit.x, nan=0.0), 0.0, None)
    fitted = fitted / fitted.sum() if fitted.sum() > 0 else mean
    candidates = [fitted, mean, *np.eye(m)]
    return min(candidates, key=lambda w: logloss(y, combine(z, w)))


@dataclass
class EnsembleScorer:
    """Trained runs scored as one model; attributes a caller reads of a Scorer (config,
    items, device, ...) are the first member's, which every member shares (checked). The
    schema is the first member's with every member's item feature columns (ensemble_checks.py:
    members may read different ones)."""

    members: tuple[Scorer, ...]
    runs: tuple[Path, ...]
    weights: np.ndarray  # (members,) float64, non-negative, summing to 1

    @property
    def config(self) -> Config:
        return self.members[0].config

    @cached_property
    def schema(self) -> DataSchema:
        return union_schema([m.schema for m in self.members])

    @property
    def items(self) -> ItemTable:
        return self.members[0].items

    @property
    def data_dir(self) -> Path | None:
        return self.members[0].data_dir

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    @property
    def precision(self) -> str:
        return self.members[0].precision

    @property
    def parameter_count(self) -> int:
        return sum(m.parameter_count for m in self.members)

    @property
    def model(self) -> nn.ModuleList:
        """The members' models (a server drops their weights when a model process scores)."""
        return nn.ModuleList([m.model for m in self.members])

    @property
    def num_items(self) -> int:
        return self.members[0].num_items

    def split(self, name: str, *, require_labels: bool = False) -> Split:
        return self.members[0].split(name, require_labels=require_labels)

    def logits(self, split: str | Split = "test", *, progress: bool = False) -> np.ndarray:
        """(rows, members) logits of every member on the same rows of a split."""
        rows = self.split(split) if isinstance(split, str) else split
        cols = [m.predict(rows, progress=progress, logits=True) for m in self.members]
        return np.stack(cols, axis=1)

    def predict(self, split: str | Split = "test", *, progress: bool = False) -> np.ndarray:
        return combine(self.logits(split, progress=progress), self.weights)

    def evaluate(self, split: str | Split = "valid") -> dict[str, float]:
        return self.report(split)

    def report(self, split: str | Split = "valid", counts: np.ndarray | None = None) -> dict:
        rows = self.split(split, require_labels=True) if isinstance(split, str) else split
        if rows.labels is None:
            raise CheckpointError(f"split {rows.name!r} has no labels to evaluate against")
        per_row = None if counts is None else counts[rows.target]
        return split_report(rows.users, rows.labels, self.predict(rows), per_row)

    def train_target_counts(self) -> np.ndarray:
        return self.members[0].train_target_counts()

    def fit(self, split: str | Split = "valid") -> np.ndarray:
        """Fit the weights on a labelled split (``fit_weights``), keep and return them."""
        rows = self.split(split, require_labels=True) if isinstance(split, str) else split
        if rows.labels is None:
            raise CheckpointError(f"split {rows.name!r} has no labels to fit weights on")
        self.weights = fit_weights(self.logits(rows), rows.labels)
        return self.weights

    def add_items(
        self, tags: Any, emb: Any, levels: Any = None, room: int = 0, first: int | None = None
    ) -> np.ndarray:
        """Register new items in every member (``Scorer.add_items``'s arguments, the item
        features in the order of ``schema.item_feature_cols``); they get the same ids in each,
        each member the feature columns it reads."""
        cols = self.schema.item_feature_cols
        if levels is not None:
            levels = check_new_item_features(
                levels, len(np.asarray(tags)), cols=cols,
                sizes=self.schema.item_feature_vocab_sizes, where="new items",
            )  # fmt: skip
        ids = [
            m.add_items(tags, emb, None if levels is None else
                        select_item_features(levels, cols, m.schema.item_feature_cols),
                        room, first)
            for m in self.members
        ]  # fmt: skip
        if any(not np.array_equal(ids[0], other) for other in ids[1:]):
            raise RuntimeError(f"the ensemble's members gave new items different ids: {ids}")
        return ids[0]

    def score(self, history: Any, target: Any, context: Any) -> np.ndarray:
        cols = [m.score(history, target, context, logits=True) for m in self.members]
        return combine(np.stack(cols, axis=1), self.weights)

    def score_groups(self, groups: Sequence[Group]) -> list[np.ndarray]:
        if not groups:
            return []
        cols = [np.concatenate(m.score_groups(groups, logits=True)) for m in self.members]
        counts = np.cumsum([len(g[2]) for g in groups])[:-1]
        return np.split(combine(np.stack(cols, axis=1), self.weights), counts)


def load_ensemble(
    run_dirs: Sequence[str | Path],
    data_dir: str | Path | None,
    weights: Weights = None,
    *,
    device: str | torch.device | None = None,
    precision: str = "fp32",
) -> EnsembleScorer:
    """Two or more runs of one data (``ensemble_checks``: they may read different item
    feature columns), each loaded by ``load_run``, as one scorer.

    ``weights``: None or "mean" (``1/m`` each), "fitted" (``fit_weights`` on the valid split
    of ``data_dir``), or one non-negative number a run (normalised to sum 1). ``data_dir``
    may be None when every run keeps its item table (``load_run``). Refuses fewer
    than two runs, a run listed twice, and runs whose data schemas or data sections differ
    (CheckpointError naming both runs and the fields).
    """
    runs = tuple(Path(r) for r in run_dirs)
    check_runs(runs)
    saved = [saved_config(run) for run in runs]  # refused before any run is loaded
    check_pairs(runs, saved)
    first = load_run(runs[0], data_dir, device=device, precision=precision)
    members = [first]
    for run, theirs in zip(runs[1:], saved[1:], strict=True):
        # the item table was read and checked for the first run; this one shares it when it
        # reads the same item feature columns
        same = theirs is not None and theirs[1].item_feature_cols == first.schema.item_feature_cols
        members.append(load_run(run, data_dir, device=device, precision=precision,
                                items=first.items if same else None))  # fmt: skip
        if members[-1].num_items != first.num_items:
            raise CheckpointError(
                f"{runs[0]} knows {first.num_items} items and {run} {members[-1].num_items}: "
                "their registered new items differ"
            )
    if None in saved:  # some were not compared above, before loading
        check_pairs(runs, [(m.config, m.schema) for m in members])
    mean = np.full(len(runs), 1.0 / len(runs))
    ensemble = EnsembleScorer(tuple(members), runs, mean)
    if isinstance(weights, str) and weights == "fitted":
        ensemble.fit("valid")
    elif not (weights is None or (isinstance(weights, str) and weights == "mean")):
        ensemble.weights = checked_weights(weights, len(runs))
    return ensemble


__all__ = ["EnsembleScorer", "combine", "fit_weights", "load_ensemble"]
