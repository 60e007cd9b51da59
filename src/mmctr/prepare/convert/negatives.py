"""Sampled negatives: for each positive, items its user never interacted with.

Rejection sampling on whole arrays: draw every negative at once, find the few that hit an item
of the user (or repeat one drawn for the same positive), redraw only those. A user touches a
tiny share of the catalogue, so a handful of rounds ends it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmctr.errors import DataError
from mmctr.prepare.convert.io import show

IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float64]]
MAX_ROUNDS = 10_000  # a safety stop; the feasibility check makes it unreachable in practice


def sample_negatives(
    users: IntArray,
    touched: IntArray,
    pool: IntArray,
    weights: FloatArray | None,
    num: int,
    num_items: int,
    rng: np.random.Generator,
    user_names: np.ndarray | None = None,
) -> IntArray:
    """Draw ``num`` distinct negatives per positive, none of them an item its user touched.

    Args:
        users: user of each positive.
        touched: sorted unique keys ``user * num_items + item`` of every (user, item) pair in
            the users' whole logs.
        pool: candidate item ids, unique.
        weights: sampling weight of each candidate (None = uniform); zero-weight items are
            never drawn.
        num_items: item ids are below it.
        user_names: original id of each user id, for messages.

    Shape: users (P,) -> (P, num) int64.
    """
    if weights is not None:
        keep = weights > 0
        pool, weights = pool[keep], weights[keep]
    _check_feasible(users, touched, pool, num, num_items, user_names)
    cum = None if weights is None else np.cumsum(weights) / weights.sum()

    def draw(n: int) -> IntArray:
        if cum is None:
            return pool[rng.integers(0, len(pool), size=n)]
        return pool[np.minimum(np.searchsorted(cum, rng.random(n), side="right"), len(pool) - 1)]

    out = draw(len(users) * num).reshape(len(users), num)
    bad = _rejected(out, users, touched, num_items)
    for _ in range(MAX_ROUNDS):
        n_bad = int(bad.sum())
        if n_bad == 0:
            return out
        out[bad] = draw(n_bad)  # row-major order keeps the redraws deterministic
        rows = np.flatnonzero(bad.any(axis=1))
        bad[rows] = _rejected(out[rows], users[rows], touched, num_items)
    raise RuntimeError(f"negative sampling did not converge in {MAX_ROUNDS} rounds")


def _rejected(cand: IntArray, users: IntArray, touched: IntArray, num_items: int) -> np.ndarray:
    """(P, num) bool: the candidate is the user's item or repeats an earlier one of its row."""
    keys = users[:, None] * np.int64(num_items) + cand
    pos = np.minimum(np.searchsorted(touched, keys), len(touched) - 1)
    bad = touched[pos] == keys
    for j in range(1, cand.shape[1]):
        bad[:, j] |= (cand[:, :j] == cand[:, j : j + 1]).any(axis=1)
    return bad


def _check_feasible(
    users: IntArray,
    touched: IntArray,
    pool: IntArray,
    num: int,
    num_items: int,
    user_names: np.ndarray | None,
) -> None:
    """Every user must leave at least ``num`` untouched items in the pool."""
    in_pool = np.zeros(num_items, dtype=bool)
    in_pool[pool] = True
    pair_users, pair_items = touched // num_items, touched % num_items
    blocked = np.bincount(pair_users[in_pool[pair_items]], minlength=int(users.max()) + 1)
    free = len(pool) - blocked[users]
    if (free < num).any():
        row = int(np.argmax(free < num))
        user = user_names[users[row]] if user_names is not None else users[row]
        raise DataError(
            f"user {show(user)} leaves only {int(free[row])} of {len(pool)} candidate items "
            f"untouched, fewer than --negatives {num}; lower --negatives or use uniform sampling"
        )
