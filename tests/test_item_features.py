"""Item features (issue 28): each item's integer attributes (its likes / views levels) kept in
item_info and embedded into the item vector of the target and of every history item."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import mmctr
from mmctr.cli.main import main
from mmctr.config.data import DataConfig
from mmctr.data import DataSchema, load_dataset
from mmctr.errors import ConfigError, DataError
from mmctr.training import checkpoint as ckpt

COLS = ("likes_level", "views_level")
FEATURES = "data.item_feature_cols=likes_level,views_level"
OLD_RUNS = Path(__file__).parent / "fixtures" / "runs-0.1.0"


class StopAfterFirstEpoch:
    """A monitor that interrupts training once epoch 1 is saved, as a kill would."""

    def epoch(self, epoch: int, step_losses: torch.Tensor, record: dict[str, Any]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt


def rewrite_items(data: Path, column: str, values: np.ndarray) -> None:
    path = data / "item_info.parquet"
    table = pq.read_table(path)
    i = table.column_names.index(column)
    pq.write_table(table.set_column(i, column, pa.array(values, pa.int64())), path)


def test_synth_gives_items_the_levels_their_rows_are_drawn_around(tiny_data_master: Path) -> None:
    items = pq.read_table(tiny_data_master / "item_info.parquet")
    train = pq.read_table(tiny_data_master / "train.parquet")
    targets = train.column("item_id").to_numpy()
    for col in COLS:
        level = items.column(col).to_numpy()
        assert level[0] == 0 and level[1:].min() == 1 and level.max() == 10
        rows = train.column(col).to_numpy()
        assert ((np.abs(rows - level[targets]) <= 1) | (rows == 0)).all()  # noisy levels
        assert (rows == level[targets]).mean() > 0.6


def test_converted_item_info_holds_each_items_levels(tmp_path: Path) -> None:
    from test_convert import run

    out, _ = run(tmp_path)
    items = pq.read_table(out / "item_info.parquet")
    assert items.column_names[-2:] == list(COLS)
    cfg = DataConfig(item_feature_cols=COLS)
    data = load_dataset(out, cfg, ("train", "valid", "test"))
    assert data.schema.item_feature_cols == COLS
    features = data.items.feature_matrix
    assert features.shape == (data.items.num_items, 2) and not features[0].any()
    for split in data.splits.values():  # a row's levels are its target's
        assert (features[split.target] == split.context).all()


def test_config_keys_are_checked(tiny_config: Any) -> None:
    assert DataConfig().item_feature_cols == () and tiny_config.model.item_feature_dim == 16
    for bad in (
        [FEATURES, "data.item_feature_vocab_sizes=11"],
        [FEATURES, "data.item_feature_vocab_sizes=11,0"],
        ["data.item_feature_cols=likes_level,likes_level"],
        ["data.item_feature_cols=item_tags"],
        ["model.item_feature_dim=0"],
    ):
        with pytest.raises(ConfigError):
            tiny_config.with_overrides(bad)


def test_a_missing_column_or_bad_value_is_a_data_error(
    tiny_data: Path, tiny_config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", "--data", str(tiny_data), "--config", str(tiny_config_file)]
    missing = [*args, "--out", str(tmp_path / "a"), "--set", "data.item_feature_cols=likes_level,x"]
    assert main(missing) == 2
    err = capsys.readouterr().err
    assert "item_info.parquet: missing column 'x'" in err and "data.item_feature_cols" in err
    levels = pq.read_table(tiny_data / "item_info.parquet").column("views_level").to_numpy()
    rewrite_items(tiny_data, "views_level", np.where(np.arange(len(levels)) == 7, -1, levels))
    assert main([*args, "--out", str(tmp_path / "b"), "--set", FEATURES]) == 2
    assert "item_info.parquet: column 'views_level' row 7: value -1" in capsys.readouterr().err
    rewrite_items(tiny_data, "views_level", levels)
    cfg = DataConfig(item_feature_cols=COLS, item_feature_vocab_sizes=(11, 5))
    with pytest.raises(DataError, match=r"'views_level' row \d+: value \d+ .*item_feature_vocab"):
        load_dataset(tiny_data, cfg, ())
    rewrite_items(tiny_data, "likes_level", np.where(np.arange(len(levels)) == 0, 3, levels))
    with pytest.raises(DataError, match="'likes_level' row 0: the padding item"):
        load_dataset(tiny_data, DataConfig(item_feature_cols=COLS), ())


def test_old_schemas_keep_their_fingerprint(tiny_data_master: Path) -> None:
    for run in ("seed-model", "din"):
        summary = json.loads((OLD_RUNS / run / "summary.json").read_text())
        schema = ckpt.load_trained(OLD_RUNS / run).schema
        assert schema.item_feature_cols == () and schema.fingerprint == summary["fingerprint"]
    plain = load_dataset(tiny_data_master, DataConfig(), ()).schema
    raw = plain.to_dict()
    assert "item_feature_cols" not in raw and "item_feature_vocab_sizes" not in raw
    blob = json.dumps(raw, sort_keys=True).encode()
    assert plain.fingerprint == hashlib.sha256(blob).hexdigest()[:16]
    assert DataSchema.from_dict(raw) == plain
    with_features = load_dataset(tiny_data_master, DataConfig(item_feature_cols=COLS), ()).schema
    assert with_features.item_feature_vocab_sizes == (11, 11)
    assert DataSchema.from_dict(with_features.to_dict()) == with_features
    assert with_features.fingerprint != plain.fingerprint


def test_the_item_vector_reads_the_levels(tiny_data_master: Path, tiny_config: Any) -> None:
    from mmctr.model import build_model
    from mmctr.training.inference import attach_items

    config = tiny_config.with_overrides([FEATURES])
    data = load_dataset(tiny_data_master, config.data, ())
    model = build_model(config.model, data.schema.dims).eval()
    attach_items(model, data.items)
    plain = build_model(
        tiny_config.model, load_dataset(tiny_data_master, DataConfig(), ()).schema.dims
    )
    assert model.items.out_dim == plain.items.out_dim + 2 * 16
    ids = torch.tensor([0, 5])
    before = model.items(ids)
    assert not before[0].any(), "padding stays zero"
    features = model.items.item_features.clone()
    features[5, 1] = features[5, 1] % 10 + 1  # another views level, nothing else changed
    model.items.load_item_features(model.items.item_tags, model.items.item_emb, features)
    after = model.items(ids)
    assert not torch.equal(before[1], after[1]) and not after[0].any()
    assert model.items.append_items(model.items.item_tags[1:3], model.items.item_emb[1:3]) > 0
    assert not model.items.item_features[-2:].any()  # new items without levels: 0, unknown


def test_trains_resumes_evaluates_predicts_and_serves_with_item_features(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    data, whole, killed = str(tiny_data_master), tmp_path / "whole", tmp_path / "killed"
    sets = ["--set", FEATURES, "--set", "train.epochs=2"]
    train = ["train", "--data", data, "--config", str(tiny_config_file), *sets]
    assert main([*train, "--out", str(whole)]) == 0
    saved = json.loads((whole / "summary.json").read_text())
    assert ckpt.load_trained(whole).schema.item_feature_cols == COLS
    assert saved["fingerprint"] == ckpt.load_trained(whole).schema.fingerprint
    overrides = [FEATURES, "train.epochs=2"]
    with pytest.raises(KeyboardInterrupt):
        mmctr.train(data, tiny_config_file, killed, overrides=overrides, log=lambda _: None,
                    monitor=StopAfterFirstEpoch())  # fmt: skip
    assert main(["train", "--data", data, "--out", str(killed), "--resume"]) == 0
    capsys.readouterr()
    for run in (whole, killed):
        assert main(["evaluate", "--run", str(run), "--data", data, "--json"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["auc"] == pytest.approx(second["auc"], abs=1e-9)  # resuming changed nothing
    out = tmp_path / "submission.zip"
    assert main(["predict", "--run", str(whole), "--data", data, "--out", str(out)]) == 0
    _serves_like_the_scorer(whole, tiny_data_master)


def _serves_like_the_scorer(run: Path, data: Path) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmctr.serve.app import build_app
    from mmctr.serve.settings import ServeSettings, load_served

    scorer = mmctr.load_run(run, data, device="cpu")
    expected = scorer.score([[3, 1, 4]] * 2, [9, 2], [[3, 1]] * 2)
    tags, emb = scorer.items.tags[9].tolist(), scorer.items.emb[9].tolist()
    levels = scorer.items.feature_matrix[9].tolist()
    new = scorer.add_items([tags, tags], [emb, emb], [levels, [0, 0]])
    known = scorer.score([[3, 1, 4]] * 2, new, [[3, 1]] * 2)
    assert known[0] != known[1], "the levels of a new item are read"
    app = build_app(load_served(ServeSettings(run=str(run), data=str(data), threads=1)))
    with TestClient(app) as client:
        body = {"history": [3, 1, 4], "context": {"likes_level": 3, "views_level": 1}}
        answer = client.post("/v1/score", json={**body, "candidates": [9, 2]})
        assert answer.status_code == 200, answer.text
        assert np.allclose(answer.json()["scores"], expected, atol=1e-6)
        item = {"tags": tags, "emb": emb}
        given = dict(zip(COLS, levels, strict=True))
        items = [{**item, "levels": given}, item]
        ids = client.post("/v1/items", json={"items": items}).json()["ids"]
        scored = client.post("/v1/score", json={**body, "candidates": ids}).json()["scores"]
        assert np.allclose(scored, known, atol=1e-6)
        bad = client.post("/v1/items", json={"items": [{**item, "levels": {"nope": 1}}]})
        assert bad.status_code == 422 and "items[0].levels.nope" in bad.text


def test_items_add_reads_and_keeps_levels(
    tiny_data_master: Path, tiny_config: Any, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    config = tiny_config.with_overrides([FEATURES, "train.epochs=1"])
    mmctr.train(tiny_data_master, config, run, log=lambda _: None)
    scorer = mmctr.load_run(run, tiny_data_master, device="cpu")
    n, tags, emb = scorer.num_items, scorer.items.tags[4].tolist(), scorer.items.emb[4].tolist()
    new = tmp_path / "new.parquet"
    pq.write_table(pa.table({"item_tags": [tags] * 2, "item_emb": [emb] * 2,
                             "views_level": [7, 2]}), new)  # fmt: skip
    args = ["items", "add", "--run", str(run), "--data", str(tiny_data_master), "--items"]
    assert main([*args, str(new)]) == 0
    again = mmctr.load_run(run, tiny_data_master, device="cpu")
    assert again.model.items.item_features[n:].tolist() == [[0, 7], [0, 2]]
    with pytest.raises(DataError, match="views_level 11 is outside"):
        again.add_items([tags], [emb], [[0, 11]])
    shutil.rmtree(run)
