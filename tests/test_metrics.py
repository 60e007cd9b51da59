"""Metrics: AUC, logloss and gAUC against values worked out by hand and against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mmctr.training.metrics import all_metrics, auc, gauc, logloss


def test_auc_by_hand_with_a_tie() -> None:
    # positives score 0.9 and 0.4, negatives 0.4 and 0.1: of the 4 (pos, neg) pairs, 3 are
    # ordered right and one is tied (counts 1/2), so AUC = 3.5 / 4
    labels = np.array([1, 0, 1, 0])
    scores = np.array([0.9, 0.4, 0.4, 0.1])
    assert auc(labels, scores) == pytest.approx(0.875, abs=1e-15)


def test_auc_without_one_class_is_nan() -> None:
    assert math.isnan(auc(np.ones(5), np.linspace(0, 1, 5)))
    assert math.isnan(auc(np.zeros(5), np.linspace(0, 1, 5)))


def test_logloss_by_hand_and_clipped() -> None:
    value = logloss(np.array([1.0, 0.0]), np.array([0.8, 0.3]))
    assert value == pytest.approx(-(math.log(0.8) + math.log(0.7)) / 2, abs=1e-15)
    assert math.isfinite(logloss(np.array([1.0, 0.0]), np.array([0.0, 1.0])))  # eps-clipped


def test_gauc_by_hand() -> None:
    # user 7: AUC 1 over 3 rows; user 3: pairs (0.2 > 0.1 right, 0.2 vs 0.5 wrong) AUC 1/2 over
    # 3 rows; user 5 has one class only and is left out -> (1 * 3 + 0.5 * 3) / 6
    users = np.array([7, 3, 7, 5, 3, 7, 3, 5])
    labels = np.array([1, 1, 0, 1, 0, 0, 0, 1])
    scores = np.array([0.9, 0.2, 0.3, 0.5, 0.1, 0.2, 0.5, 0.4])
    assert gauc(users, labels, scores) == pytest.approx(0.75, abs=1e-15)


def test_gauc_is_roc_auc_score_per_user_weighted_by_rows() -> None:
    rng = np.random.default_rng(0)
    n = 5_000
    users = rng.integers(0, 300, n)
    labels = (rng.random(n) < 0.3).astype(np.float32)
    scores = np.round(rng.random(n), 2)  # many ties, within and across users
    num = den = 0.0
    for u in np.unique(users):
        rows = users == u
        if 0 < labels[rows].sum() < rows.sum():
            num += roc_auc_score(labels[rows], scores[rows]) * rows.sum()
            den += rows.sum()
    assert gauc(users, labels, scores) == pytest.approx(num / den, abs=1e-12)
    assert auc(labels, scores) == roc_auc_score(labels, scores)
    assert math.isnan(gauc(np.arange(4), np.array([1, 0, 1, 0]), np.ones(4)))  # one row a user


def test_all_metrics_names_and_values() -> None:
    users, labels = np.array([1, 1, 2, 2]), np.array([1, 0, 0, 1])
    metrics = all_metrics(users, labels, np.array([0.6, 0.2, 0.3, 0.7]))
    expected_logloss = -(math.log(0.6) + math.log(0.8) + math.log(0.7) + math.log(0.7)) / 4
    assert metrics == {"auc": 1.0, "logloss": pytest.approx(expected_logloss), "gauc": 1.0}
