"""The Python face: train, load a run, and score a split or plain arrays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mmctr
from mmctr.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def nb_run(tiny_run_master: Path) -> Path:
    return tiny_run_master


def test_train_load_evaluate_predict(nb_run: Path, tiny_data_master: Path) -> None:
    summary = json.loads((nb_run / "summary.json").read_text())
    scorer = mmctr.load_run(nb_run, tiny_data_master, device="cpu")
    assert scorer.evaluate("valid") == pytest.approx(summary["best_valid"], rel=1e-6)
    probs = scorer.predict("test")
    assert probs.shape == (len(scorer.split("test")),) and ((probs > 0) & (probs < 1)).all()


def test_score_plain_arrays_like_the_split(nb_run: Path, tiny_data_master: Path) -> None:
    scorer = mmctr.load_run(nb_run, tiny_data_master, device="cpu")
    valid = scorer.split("valid")
    rows = slice(0, 40)
    expected = scorer.predict(valid)[rows]
    padded = scorer.score(valid.history[rows], valid.target[rows], valid.context[rows])
    assert np.allclose(padded, expected, atol=1e-6)
    ragged = [[int(i) for i in row if i != 0] for row in valid.history[rows]]  # oldest first
    assert np.allclose(scorer.score(ragged, valid.target[rows], valid.context[rows]), expected,
                       atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    ("history", "target", "context", "message"),
    [
        ([[1, 2]], [10**6], [[0, 0]], r"target: item id 1000000 is outside"),
        ([[1, -2]], [1], [[0, 0]], r"history: item id -2 is outside the model's vocabulary 0\.\."),
        ([[1, 2]], [1], [[0, 99]], r"context column views_level: level 99 is outside"),
        ([[1, 2]], [1], [[0]], r"context has 1 columns; the model reads likes_level"),
        ([[1, 2]], [1, 2], [[0, 0]], r"history has 1 rows, target 2"),
        ([[1.5, 2.0]], [1], [[0, 0]], r"history\[0\] must hold integer ids"),
        (np.ones((1, 3)), [1], [[0, 0]], r"history must hold integer ids, got float64"),
        (np.ones(3, dtype=int), [1], [[0, 0]], r"history must have 2 dimension\(s\)"),
    ],
)
def test_score_refuses_bad_arrays(
    nb_run: Path, tiny_data_master: Path, history: object, target: object, context: object,
    message: str,
) -> None:  # fmt: skip
    scorer = mmctr.load_run(nb_run, tiny_data_master, device="cpu")
    with pytest.raises(ValueError, match=message):
        scorer.score(history, target, context)


def test_load_run_errors(tmp_path: Path, tiny_data_master: Path) -> None:
    with pytest.raises(CheckpointError, match="run directory not found"):
        mmctr.load_run(tmp_path / "nope", tiny_data_master)
    with pytest.raises(ConfigError, match="config file not found: nope"):
        mmctr.train(tiny_data_master, "nope", tmp_path / "run")
