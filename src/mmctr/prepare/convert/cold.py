"""Held-out items: a cold-start test made from a log in which every item is well seen.

``--cold-items F`` picks a seeded share F of the items that have a train-period interaction
and removes those interactions from the log, so that the items reach valid and test as new
ones: no train row has them as its target, positive or sampled negative, no train history
holds them, and their views and likes levels are 0. Their valid- and test-period
interactions stay. Every user keeps their last two interactions (valid and test); a user left
with fewer than three interactions is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mmctr.errors import DataError
from mmctr.prepare.convert.write import SortedLog

Array = np.ndarray[Any, Any]
MIN_EVENTS = 3  # one train-period event (the first train row's history), valid and test
SEED_SALT = 0xC01D  # keeps this draw apart from the negatives' streams of the same --seed


@dataclass(frozen=True)
class ColdItems:
    """The held-out items and what holding them out removed."""

    items: Array  # (C,) sorted new item ids
    touched: Array  # keys ``user * num_items + item`` of the removed (user, item) pairs
    info: dict[str, Any]  # dataset.json's "cold_items"


def train_period(log: SortedLog) -> Array:
    """(E,) bool: the event is before its user's last two (valid and test)."""
    return log.pos <= log.length[log.users] - 3


def hold_out_items(
    log: SortedLog, fraction: float, seed: int, num_items: int
) -> tuple[SortedLog, ColdItems]:
    """The log without the train-period interactions of a share ``fraction`` of the items.

    The share is of the items with a train-period interaction; the draw depends on ``seed``
    only. Raises DataError when the share rounds to no item.
    """
    period = train_period(log)
    warm = np.unique(log.items[period])
    count = round(fraction * len(warm))
    if count < 1:
        raise DataError(
            f"--cold-items {fraction}: {fraction} of the {len(warm)} items with a train-period "
            "interaction is less than one item; raise it or leave it at 0"
        )
    rng = np.random.default_rng([seed, SEED_SALT])
    cold = np.sort(rng.choice(warm, size=count, replace=False))
    drop = period & np.isin(log.items, cold)
    per_user = np.bincount(log.users[~drop], minlength=len(log.length))
    keep_user = per_user >= MIN_EVENTS
    keep_user[0] = False
    new_user = np.cumsum(keep_user).astype(np.int64)  # old id -> new id among kept users
    keep = ~drop & keep_user[log.users]
    users = new_user[log.users[keep]]
    length = np.r_[0, per_user[keep_user]].astype(np.int64)
    out = SortedLog.of(users, log.items[keep], length, log.user_names[keep_user[1:]])
    removed = drop & keep_user[log.users]
    touched = np.unique(new_user[log.users[removed]] * np.int64(num_items) + log.items[removed])
    gone = ~keep_user[1:] & (log.length[1:] > 0)
    info = {
        "fraction": fraction,
        "items": count,
        "of_items_with_train_period_interactions": len(warm),
        "interactions_removed": int(drop.sum()),
        "users_dropped": int(gone.sum()),
        "rule": (
            "the items' train-period interactions are removed from the log: no train row has "
            "them as target or negative, no train history holds them; their valid and test "
            "interactions stay; users left with fewer than 3 interactions are dropped"
        ),
    }
    return out, ColdItems(cold, touched, info)
