"""One allocator of new item ids for a run, shared by ``mmctr items add`` and a server's
``POST /v1/items``: an id handed out by one is never handed out by the other, and an id names
the same item after a restart.

New items take the ids after the trained ones: N + M for the next, M being the items
registered so far, which the run keeps in its item bundle (``RUN/items.npz``, bundle.py; a run
written before bundles keeps them in ``RUN/new_items.parquet``). ``register_items`` takes the
run lock (lock.py), reads the items registered so far from disk, not from the caller's memory
(another process may have added some since), appends the new ones, writes the file atomically
and lets the lock go. The lock is held for that read and write alone, so that a server and
``mmctr items add`` take turns: a caller that finds it taken tries again for up to
``LOCK_WAIT_S`` seconds, then raises RunLockedError (a training run holds it for the whole
run).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mmctr.data import DataSchema
from mmctr.data.schema import select_item_features
from mmctr.errors import CheckpointError, MmctrError, RunLockedError
from mmctr.items import check_for_schema, write_new_items
from mmctr.training.bundle import Bundle, Rows, write_bundle
from mmctr.training.lock import run_lock
from mmctr.training.run_items import registered_items

LOCK_WAIT_S = 5.0  # how long a registration waits for another writer's turn to end
_POLL_S = 0.02


class TooManyItems(MmctrError):
    """Registering the items would take the run past its cap on registered items."""

    def __init__(self, have: int, count: int, limit: int) -> None:
        super().__init__(
            f"the run holds {have:,} registered items and takes at most {limit:,}: "
            f"{count:,} more do not fit"
        )
        self.have, self.count, self.limit = have, count, limit


@dataclass(frozen=True)
class Registration:
    """What ``register_items`` did: the new items' first id, and every registered item from
    id ``since`` on (those others registered after the caller's ``known``, then the new)."""

    first: int
    since: int
    rows: Rows

    @property
    def ids(self) -> np.ndarray:
        """The ids of the items registered by this call."""
        return np.arange(self.first, self.since + len(self.rows[0]))


def register_items(
    run_dirs: Sequence[str | Path], schema: DataSchema, tags: Any, emb: Any, levels: Any = None,
    *, limit: int | None = None, known: int = 0, wait_s: float | None = None,
    schemas: Sequence[DataSchema] | None = None,
) -> Registration:  # fmt: skip
    """Register new items, (M, T) tags, (M, D) embeddings and (M, C) item features (None: 0,
    unknown), with a run trained on data of ``schema``: checked (DataError naming the item),
    given the next free ids, and written to the run before this returns.

    ``run_dirs``: the run, or an ensemble's runs, which hold the same registered items and all
    get the new ones. ``known``: how many registered items the caller holds already (a
    server: those it loaded or registered); fewer on disk is a CheckpointError (the bundle was
    rewritten under it). ``limit``: the most registered items the run may hold; past it
    TooManyItems, and nothing is written. ``wait_s``: how long to wait for the run's lock
    (default ``LOCK_WAIT_S``). ``schemas``: each run's own, in the order of ``run_dirs``,
    when an ensemble's runs read different item feature columns (``schema`` has them all);
    each run keeps the columns it reads.
    """
    rows = check_for_schema(schema, tags, emb, levels, where="new items")
    each = list(schemas) if schemas else [schema] * len(run_dirs)
    own = dict(zip((Path(r).resolve() for r in run_dirs), each, strict=True))
    runs = sorted(own)  # one order: no two callers cross
    with _holding(runs, LOCK_WAIT_S if wait_s is None else wait_s):
        found = [registered_items(run, own[run]) for run in runs]
        have = _count(runs, [registered for _, registered in found])
        if have < known:
            raise CheckpointError(
                f"{runs[0]}: holds {have} registered items, fewer than the {known} this "
                "process knows; its item bundle was rewritten (retrained in place?)"
            )
        if limit is not None and have + len(rows[0]) > limit:
            raise TooManyItems(have, len(rows[0]), limit)
        kept: list[tuple[tuple[str, ...], Rows]] = []  # each run's columns and items
        for run, (saved, registered) in zip(runs, found, strict=True):
            cols = own[run].item_feature_cols
            mine = (*rows[:2], select_item_features(rows[2], schema.item_feature_cols, cols))
            kept.append((cols, _appended(registered, mine)))
            _write(run, own[run], saved, kept[-1][1])
    grown = _merged(schema, kept)
    first, since = schema.num_items + have, schema.num_items + known
    return Registration(first, since, (grown[0][known:], grown[1][known:], grown[2][known:]))


@contextlib.contextmanager
def _holding(runs: list[Path], wait_s: float) -> Iterator[None]:
    """Hold every run's lock, trying again while another writer holds one, for ``wait_s``."""
    give_up = time.monotonic() + wait_s
    while True:
        with contextlib.ExitStack() as held:
            try:
                for run in runs:
                    held.enter_context(run_lock(run))
            except RunLockedError:
                if time.monotonic() >= give_up:
                    raise
            else:
                yield
                return
        time.sleep(_POLL_S)


def _count(runs: list[Path], registered: list[Rows]) -> int:
    counts = [len(rows[0]) for rows in registered]
    if len(set(counts)) > 1:
        listed = ", ".join(f"{run} {n}" for run, n in zip(runs, counts, strict=True))
        raise CheckpointError(f"the runs hold different numbers of registered items: {listed}")
    return counts[0]


def _appended(old: Rows, new: Rows) -> Rows:
    tags, emb, features = (
        np.concatenate([before, after.astype(before.dtype)])
        for before, after in zip(old, new, strict=True)
    )
    return tags, emb, features


def _merged(schema: DataSchema, grown: list[tuple[tuple[str, ...], Rows]]) -> Rows:
    """The registered items of runs that keep different item feature columns, with every
    column of ``schema`` (each taken from a run that keeps it)."""
    tags, emb, _ = grown[0][1]
    features = np.zeros((len(tags), len(schema.item_feature_cols)), dtype=grown[0][1][2].dtype)
    for c, col in enumerate(schema.item_feature_cols):
        cols, rows = next(g for g in grown if col in g[0])
        features[:, c] = rows[2][:, cols.index(col)]
    return tags, emb, features


def _write(run: Path, schema: DataSchema, saved: Bundle | None, registered: Rows) -> None:
    if saved is not None:
        write_bundle(run, schema, replace(saved, registered=registered))
        return
    ids = np.arange(schema.num_items, schema.num_items + len(registered[0]))
    write_new_items(run, ids, *registered, schema.item_feature_cols)
