"""Ensembles whose members read different item feature columns of the same items (one run the
items' levels, another none, a third them in another order), as the peers table's ensembles
do: scored, served, and new items registered with each member's own columns."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_ensemble import train_tiny

import mmctr
from mmctr.ensemble_checks import check_pairs
from mmctr.errors import CheckpointError


@pytest.fixture(scope="module")
def trained(
    tiny_run_master: Path, tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """The tiny run (no item features), one reading views_level, one reading both levels."""
    views = train_tiny(tiny_data_master, tmp_path_factory.mktemp("ens-views") / "run",
                   "data.item_feature_cols=views_level")  # fmt: skip
    both = train_tiny(tiny_data_master, tmp_path_factory.mktemp("ens-both") / "run",
                  "data.item_feature_cols=likes_level,views_level")  # fmt: skip
    return [tiny_run_master, views, both]


@pytest.fixture
def runs(trained: list[Path], tmp_path: Path) -> list[Path]:
    """Private copies: registering items writes to them."""
    copies = [tmp_path / name for name in ("plain", "views", "both")]
    for src, dst in zip(trained, copies, strict=True):
        shutil.copytree(src, dst)
    return copies


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def test_members_with_different_item_columns_score_as_one(
    runs: list[Path], tiny_data_master: Path
) -> None:
    ensemble = mmctr.load_ensemble(runs, tiny_data_master, device="cpu")
    # every member's columns, in first-seen order: views_level (2nd run), likes_level (3rd)
    assert ensemble.schema.item_feature_cols == ("views_level", "likes_level")
    assert ensemble.schema.item_feature_vocab_sizes == (11, 11)
    members = [mmctr.load_run(r, tiny_data_master, device="cpu") for r in runs]
    assert [m.schema.item_feature_cols for m in members] == [
        (),
        ("views_level",),
        ("likes_level", "views_level"),
    ]
    logits = np.stack([m.predict("valid", logits=True) for m in members], axis=1)
    assert np.abs(ensemble.predict("valid") - sigmoid(logits.mean(axis=1))).max() <= 1e-6
    fitted = mmctr.load_ensemble(runs[1:], tiny_data_master, weights="fitted", device="cpu")
    assert (fitted.weights >= 0).all() and abs(fitted.weights.sum() - 1) <= 1e-12


def test_new_items_give_each_member_its_own_columns(
    runs: list[Path], tiny_data_master: Path
) -> None:
    ensemble = mmctr.load_ensemble(runs, tiny_data_master, device="cpu")
    n, items = ensemble.num_items, ensemble.items
    tags, emb = items.tags[4:6].tolist(), items.emb[4:6].tolist()
    ids = ensemble.add_items(tags, emb, [[7, 3], [1, 9]])  # views_level, likes_level
    assert ids.tolist() == [n, n + 1]
    plain, views, both = (m.model.items for m in ensemble.members)
    assert views.item_features[n:].tolist() == [[7], [1]]
    assert both.item_features[n:].tolist() == [[3, 7], [9, 1]]  # likes_level, views_level
    assert plain.num_items == n + 2
    with pytest.raises(mmctr.errors.DataError, match="likes_level 11 is outside"):
        ensemble.add_items(tags[:1], emb[:1], [[0, 11]])


@pytest.mark.parametrize("model_process", [False, True])
def test_a_server_registers_items_with_each_member_and_keeps_them(
    runs: list[Path], tiny_data_master: Path, model_process: bool
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmctr.serve.app import build_app
    from mmctr.serve.settings import ServeSettings, load_served

    names = tuple(str(r) for r in runs)
    settings = ServeSettings(run=names[0], runs=names, data=str(tiny_data_master), threads=1,
                             model_process=model_process)  # fmt: skip
    ensemble = mmctr.load_ensemble(runs, tiny_data_master, device="cpu")
    n, items = ensemble.num_items, ensemble.items
    item = {"tags": items.tags[4].tolist(), "emb": items.emb[4].tolist()}
    body = {"history": [3, 1, 4], "context": {"likes_level": 3, "views_level": 1}}
    with TestClient(build_app(load_served(settings))) as client:
        levels = {"likes_level": 9, "views_level": 2}
        answer = client.post("/v1/items", json={"items": [{**item, "levels": levels}, item]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["ids"] == [n, n + 1]
        got = client.post("/v1/score", json={**body, "candidates": [n, n + 1, 4]}).json()
    # a fresh load reads the items back from each run's bundle, each with its own columns
    again = mmctr.load_ensemble(runs, tiny_data_master, device="cpu")
    plain, views, both = (m.model.items for m in again.members)
    assert plain.num_items == n + 2 and plain.item_features.shape[1] == 0
    assert views.item_features[n:].tolist() == [[2], [0]]
    assert both.item_features[n:].tolist() == [[9, 2], [0, 0]]
    want = again.score_groups([([3, 1, 4], [3, 1], [n, n + 1, 4])])[0]
    assert np.abs(np.asarray(got["scores"]) - want).max() <= 1e-6
    assert got["scores"][0] != got["scores"][1], "the levels of a new item are read"


def test_a_shared_column_with_two_vocabularies_is_refused(
    runs: list[Path], tiny_data_master: Path
) -> None:
    members = [mmctr.load_run(r, tiny_data_master, device="cpu") for r in runs]
    saved = [(m.config, m.schema) for m in members]
    config, schema = saved[2]
    wider = schema.with_item_features(schema.item_feature_cols, (11, 12))
    with pytest.raises(CheckpointError) as refused:
        check_pairs(runs, [saved[0], saved[1], (config, wider)])
    message = str(refused.value)
    assert f"runs {runs[1]} and {runs[2]}" in message  # the two later runs, not the first
    assert "item feature 'views_level': vocabulary 11 vs 12" in message
    other = schema.with_item_features(schema.item_feature_cols, (11, 11))
    check_pairs(runs, [saved[0], saved[1], (config, other)])  # equal vocabularies pass
