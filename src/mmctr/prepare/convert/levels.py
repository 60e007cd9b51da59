"""Context levels of items (0..10) from train-period interactions only.

A level must not see valid or test interactions, or it would leak the very clicks the model is
scored on; so every count below takes only the interactions before each user's last two.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float64]]
NUM_LEVELS = 10

VIEWS_DEF = (
    "popularity decile of the item over train-period interactions: 1 + floor(10 * share of "
    "train-seen items with a strictly smaller train interaction count), so 1..10 and equal "
    "counts share a level; 0 for items with no train-period interaction"
)
LIKES_DEF = (
    "decile (same rule) of the mean activity of the item's train-period clickers, where a "
    "user's activity is their number of train-period interactions and each distinct clicker "
    "counts once; 0 for items with no train-period clicker. The source has no like counts, so "
    "this stands in for them: items liked by heavy users rank high"
)


def decile_levels(values: FloatArray, present: np.ndarray) -> IntArray:
    """1 + floor(10 * fraction of present values strictly below), 0 where not ``present``.

    Ties share a level (a rank-based split would put equal counts in different levels), so a
    level is a function of the value alone.

    Shape: values (N,), present (N,) bool -> (N,) int64 in 0..10.
    """
    out = np.zeros(len(values), dtype=np.int64)
    seen = np.sort(values[present])
    if seen.size:
        below = np.searchsorted(seen, values[present], side="left")
        out[present] = 1 + (below * NUM_LEVELS) // seen.size
    return out


def views_levels(train_items: IntArray, num_items: int) -> tuple[IntArray, IntArray]:
    """Per item id (0..num_items-1): its level and its train-period interaction count."""
    counts = np.bincount(train_items, minlength=num_items).astype(np.int64)
    present = counts > 0
    present[0] = False  # the padding item is never a real interaction
    return decile_levels(counts.astype(np.float64), present), counts


def likes_levels(
    train_users: IntArray, train_items: IntArray, num_users: int, num_items: int
) -> IntArray:
    """Per item id: decile of the mean train activity of its distinct train-period clickers.

    Shape: train_users, train_items (E,) -> (num_items,) int64.
    """
    activity = np.bincount(train_users, minlength=num_users).astype(np.float64)
    pairs = np.unique(train_users * np.int64(num_items) + train_items)
    users, items = pairs // num_items, pairs % num_items
    clickers = np.bincount(items, minlength=num_items)
    total = np.bincount(items, weights=activity[users], minlength=num_items)
    present = clickers > 0
    present[0] = False
    mean = np.divide(total, clickers, out=np.zeros(num_items), where=present)
    return decile_levels(mean, present)
