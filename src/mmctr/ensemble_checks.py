"""What an ensemble refuses: too few runs, a run twice, bad weights, and runs of different data.

Runs are "of the same data" when they read the same rows and columns of the same data
(schemas and ``[data]`` sections equal, apart from how the data are read). The item feature
columns (``data.item_feature_cols``) are the exception: they are inputs that a run chooses
among the item table's columns, so one member may read the items' levels and another none.
A column that two members read must have the same vocabulary in both. The ensemble's schema
is then the first member's with every member's item feature columns, in first-seen order
(``union_schema``); a new item's features are given in that order and each member gets its
own columns (``data.schema.select_item_features``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmctr.config import Config
from mmctr.data import DataSchema
from mmctr.data.schema import ITEM_FEATURES
from mmctr.errors import CheckpointError, ConfigError

# DataConfig fields that only say how to read, not which rows or columns: free to differ
READING_ONLY = ("streaming", "shuffle_buffer", "context_vocab_sizes", "num_tags")


def check_runs(runs: Sequence[Path]) -> None:
    """ConfigError for fewer than two runs or one listed twice."""
    if len(runs) < 2:
        raise ConfigError(f"an ensemble needs at least two runs, got {len(runs)}")
    seen: dict[Path, Path] = {}
    for run in runs:
        key = run.resolve()
        if key in seen:
            raise ConfigError(f"run {run} is listed twice (also as {seen[key]})")
        seen[key] = run


def checked_weights(weights: Any, members: int) -> np.ndarray:
    """Given weights as float64 summing to 1; ConfigError unless one non-negative a run."""
    if isinstance(weights, str):
        raise ConfigError(f"weights {weights!r}: give mean, fitted or one number a run")
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != members:
        raise ConfigError(f"{w.size} weights for {members} runs: give one a run")
    if not np.all(np.isfinite(w)) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights {w.tolist()} must be non-negative numbers, not all 0")
    normalised: np.ndarray = w / w.sum()
    return normalised


def check_same_data(
    run_a: Path, config_a: Config, schema_a: DataSchema,
    run_b: Path, config_b: Config, schema_b: DataSchema,
) -> None:  # fmt: skip
    """CheckpointError naming both runs and every field in which their data schemas, or the
    rows and columns their data sections read, differ (item feature columns aside, whose
    shared columns must have the same vocabularies)."""
    diffs = _differences(schema_a.to_dict(), schema_b.to_dict(), "schema.", skip=ITEM_FEATURES)
    data_a, data_b = (dataclasses.asdict(c.data) for c in (config_a, config_b))
    diffs += _differences(data_a, data_b, "data.", skip=(*READING_ONLY, *ITEM_FEATURES))
    sizes_a = item_columns(schema_a)
    for col, size in item_columns(schema_b).items():
        if col in sizes_a and sizes_a[col] != size:
            diffs.append(f"item feature {col!r}: vocabulary {sizes_a[col]} vs {size}")
    if diffs:
        raise CheckpointError(
            f"runs {run_a} and {run_b} were trained on different data (schema fingerprints "
            f"{schema_a.fingerprint} and {schema_b.fingerprint}): " + "; ".join(diffs)
        )


def check_pairs(runs: Sequence[Path], saved: Sequence[tuple[Config, DataSchema] | None]) -> None:
    """``check_same_data`` on every pair of runs whose config and schema are known (None:
    not known): a column that two runs read and the first does not is checked too."""
    known = [(run, pair) for run, pair in zip(runs, saved, strict=True) if pair is not None]
    for i, (run_b, (config_b, schema_b)) in enumerate(known):
        for run_a, (config_a, schema_a) in known[:i]:
            check_same_data(run_a, config_a, schema_a, run_b, config_b, schema_b)


def union_schema(schemas: Sequence[DataSchema]) -> DataSchema:
    """The first schema with every schema's item feature columns, in first-seen order (the
    members were checked with ``check_same_data``: a shared column has one vocabulary)."""
    cols: dict[str, int] = {}
    for schema in schemas:
        for col, size in item_columns(schema).items():
            cols.setdefault(col, size)
    return schemas[0].with_item_features(tuple(cols), tuple(cols.values()))


def item_columns(schema: DataSchema) -> dict[str, int]:
    """A schema's item feature columns and their vocabulary sizes, in its order."""
    return dict(zip(schema.item_feature_cols, schema.item_feature_vocab_sizes, strict=True))


def saved_config(run: Path) -> tuple[Config, DataSchema] | None:
    """The config and schema in a run's model.pt, read without its weights (memory-mapped),
    so that runs of different data are refused before any is attached to the data; None
    when it cannot be read this way (``load_run`` then says why)."""
    try:
        payload = torch.load(run / "model.pt", map_location="cpu", weights_only=True, mmap=True)
        config = Config.from_saved(payload["config"], source=str(run / "model.pt"))
        return config, DataSchema.from_dict(payload["schema"])
    except Exception:
        return None


def _differences(
    a: dict[str, Any], b: dict[str, Any], prefix: str, skip: Sequence[str] = ()
) -> list[str]:
    keys = [k for k in dict.fromkeys([*a, *b]) if k not in skip]
    return [f"{prefix}{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]
