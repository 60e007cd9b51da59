"""Ranking and calibration metrics: AUC, logloss and user-grouped AUC (gAUC)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve, by scikit-learn's ``roc_auc_score`` (ties count one half), the
    function most CTR papers' numbers come from; nan when a class is absent."""
    from sklearn.metrics import roc_auc_score  # scipy's slow imports: only when scoring

    y = np.asarray(labels, dtype=np.float64) > 0.5
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores)))


def logloss(labels: np.ndarray, probs: np.ndarray, eps: float = 1e-7) -> float:
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def gauc(users: np.ndarray, labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean of per-user AUCs weighted by each user's row count.

    Users whose rows are all of one class have no AUC and are left out; nan if none is left.
    It equals ``auc`` applied to each user's rows and averaged (the tests check that against
    ``roc_auc_score`` per user), computed here in one vectorised pass over tie-averaged ranks,
    since a call per user costs a thousand times as much on data with many users.
    """
    users = np.asarray(users)
    scores = np.asarray(scores, dtype=np.float64)
    order = np.lexsort((scores, users))
    u, s = users[order], scores[order]
    y = np.asarray(labels, dtype=np.float64)[order] > 0.5
    group_start = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])
    group_id = np.repeat(np.arange(group_start.size), np.diff(np.r_[group_start, u.size]))
    # tie groups never cross users because users differ at a group boundary
    tie_key = np.r_[True, (u[1:] != u[:-1]) | (s[1:] != s[:-1])]
    tie_start = np.flatnonzero(tie_key)
    tie_end = np.r_[tie_start[1:], u.size]
    global_rank = np.repeat((tie_start + tie_end + 1) / 2.0, tie_end - tie_start)
    rank = global_rank - group_start[group_id]  # rank within the user's rows
    n_rows = np.bincount(group_id)
    n_pos = np.bincount(group_id, weights=y.astype(np.float64))
    n_neg = n_rows - n_pos
    pos_rank_sum = np.bincount(group_id, weights=np.where(y, rank, 0.0))
    valid = (n_pos > 0) & (n_neg > 0)
    if not valid.any():
        return float("nan")
    user_auc = (pos_rank_sum[valid] - n_pos[valid] * (n_pos[valid] + 1) / 2.0) / (
        n_pos[valid] * n_neg[valid]
    )
    weights = n_rows[valid]
    return float(np.sum(user_auc * weights) / np.sum(weights))


def all_metrics(users: np.ndarray, labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    return {
        "auc": auc(labels, probs),
        "logloss": logloss(labels, probs),
        "gauc": gauc(users, labels, probs),
    }


# a row's bucket is how often its target item is the target of a train row
FREQUENCY_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("unseen", 0, 0),
    ("1-5", 1, 5),
    ("6-50", 6, 50),
    (">50", 51, math.inf),
)


def metrics_by_item_frequency(
    users: np.ndarray, labels: np.ndarray, probs: np.ndarray, train_counts: np.ndarray
) -> list[dict[str, float | int | str]]:
    """``all_metrics`` per ``FREQUENCY_BUCKETS`` bucket, with its rows and positives; a
    bucket without rows, or without both classes, has nan metrics. ``train_counts``: each
    row's target item's train occurrences."""
    out: list[dict[str, float | int | str]] = []
    y = np.asarray(labels) > 0.5
    for name, low, high in FREQUENCY_BUCKETS:
        mine = (train_counts >= low) & (train_counts <= high)
        n = int(mine.sum())
        nan = float("nan")
        metrics = (
            all_metrics(users[mine], labels[mine], probs[mine])
            if n
            else {"auc": nan, "logloss": nan, "gauc": nan}
        )
        out.append({"bucket": name, "rows": n, "positives": int(y[mine].sum()), **metrics})
    return out


def split_report(
    users: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    target_counts: np.ndarray | None = None,
) -> dict[str, Any]:
    """``all_metrics`` of one set of predictions and, when ``target_counts`` (each row's target
    item's train occurrences) is given, ``metrics_by_item_frequency`` under "by_item_frequency":
    what every evaluation reports, computed from one prediction pass."""
    report: dict[str, Any] = dict(all_metrics(users, labels, probs))
    if target_counts is not None:
        report["by_item_frequency"] = metrics_by_item_frequency(users, labels, probs, target_counts)
    return report
