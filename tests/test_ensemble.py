"""Ensembles: two tiny runs of different kinds scored as one (the mean or fitted weights of
their logits), through Python, ``mmctr ensemble`` and ``mmctr serve --run A --run B``."""

from __future__ import annotations

import io
import json
import shutil
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_TOML

import mmctr
from mmctr.cli.main import main
from mmctr.config import Config
from mmctr.ensemble import combine, fit_weights, load_ensemble
from mmctr.errors import CheckpointError, ConfigError
from mmctr.training.metrics import all_metrics, logloss


def train_tiny(data: Path, out: Path, *sets: str) -> Path:
    torch.set_num_threads(1)
    config = Config.from_dict(tomllib.loads(TINY_TOML))
    mmctr.train(data, config, out, overrides=["train.epochs=1", *sets], log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def runs(
    tiny_run_master: Path, tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """The tiny target-transformer run (a copy: a server keeps the items registered with it)
    and a tiny DIN run (one epoch each)."""
    din = train_tiny(tiny_data_master, tmp_path_factory.mktemp("ens-din") / "din", "model.kind=din")
    seed = tmp_path_factory.mktemp("ens-seed") / "run"
    shutil.copytree(tiny_run_master, seed)
    return [seed, din]


@pytest.fixture(scope="module")
def other_data_run(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose data schema differs from the others' in num_tags alone."""
    return train_tiny(
        tiny_data_master, tmp_path_factory.mktemp("ens-tags") / "tags", "data.num_tags=70"
    )


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def member_logits(runs: list[Path], data: Path, split: str) -> np.ndarray:
    """Each run's logits from its own Scorer, independently of the ensemble."""
    cols = [mmctr.load_run(r, data, device="cpu").predict(split, logits=True) for r in runs]
    return np.stack(cols, axis=1).astype(np.float64)


def test_scores_are_the_sigmoid_of_the_mean_logit(runs: list[Path], tiny_data_master: Path) -> None:
    ensemble = mmctr.load_ensemble(runs, tiny_data_master, device="cpu")
    logits = member_logits(runs, tiny_data_master, "valid")
    assert np.abs(logits[:, 0] - logits[:, 1]).max() > 1e-3, "two different models"
    expected = sigmoid(logits.mean(axis=1))
    assert np.abs(ensemble.predict("valid") - expected).max() <= 1e-6
    assert ensemble.weights.tolist() == [0.5, 0.5]
    report = ensemble.evaluate("valid")
    rows = ensemble.split("valid")
    assert report == pytest.approx(all_metrics(rows.users, rows.labels, expected), abs=1e-9)
    # plain arrays and grouped candidates, as a server scores them
    members = [mmctr.load_run(r, tiny_data_master, device="cpu") for r in runs]
    hist, target, ctx = [[3, 1, 4], [5]], [9, 2], [[3, 1], [0, 2]]
    each = np.stack([m.score(hist, target, ctx, logits=True) for m in members], axis=1)
    assert np.abs(ensemble.score(hist, target, ctx) - sigmoid(each.mean(axis=1))).max() <= 1e-6
    groups = [([3, 1, 4], [3, 1], [9, 2, 6]), ([], [0, 2], [7])]
    got = ensemble.score_groups(groups)
    for group, probs in zip(groups, got, strict=True):
        alone = [m.score_groups([group], logits=True)[0] for m in members]
        assert np.abs(probs - sigmoid(np.mean(alone, axis=0))).max() <= 1e-6
    assert ensemble.parameter_count == sum(m.parameter_count for m in members)
    assert ensemble.num_items == members[0].num_items and ensemble.schema == members[0].schema


def test_fitted_weights_beat_the_mean_and_each_run_on_valid(
    runs: list[Path], tiny_data_master: Path
) -> None:
    fitted = mmctr.load_ensemble(runs, tiny_data_master, weights="fitted", device="cpu")
    w = fitted.weights
    assert (w >= 0).all() and abs(w.sum() - 1.0) <= 1e-12
    rows = fitted.split("valid")
    logits = member_logits(runs, tiny_data_master, "valid")
    mine = logloss(rows.labels, fitted.predict("valid"))
    assert mine <= logloss(rows.labels, sigmoid(logits.mean(axis=1))) + 1e-9
    for i in range(len(runs)):
        assert mine <= logloss(rows.labels, sigmoid(logits[:, i])) + 1e-9
    again = mmctr.load_ensemble(runs, tiny_data_master, weights="fitted", device="cpu")
    assert np.array_equal(again.weights, w), "deterministic"
    given = mmctr.load_ensemble(runs, tiny_data_master, weights=[3, 1], device="cpu")
    assert given.weights.tolist() == [0.75, 0.25]


def test_fit_weights_finds_the_informative_run() -> None:
    rng = np.random.default_rng(0)
    signal = rng.normal(size=4000) * 2
    labels = (rng.random(4000) < sigmoid(signal)).astype(np.float32)
    logits = np.stack([signal, rng.normal(size=4000), 0.5 * signal], axis=1)
    w = fit_weights(logits, labels)
    assert (w >= 0).all() and abs(w.sum() - 1) <= 1e-12
    assert w[0] > 0.9 and w[1] < 0.05
    assert logloss(labels, combine(logits, w)) <= logloss(labels, sigmoid(signal)) + 1e-9


def test_refusals_name_the_runs_and_fields(
    runs: list[Path], other_data_run: Path, tiny_data_master: Path
) -> None:
    a, b = runs
    with pytest.raises(ConfigError, match="at least two runs, got 1"):
        load_ensemble([a], tiny_data_master)
    again = a / ".." / a.name
    with pytest.raises(ConfigError, match=f"run {again} is listed twice \\(also as {a}\\)"):
        load_ensemble([a, b, again], tiny_data_master)
    with pytest.raises(ConfigError, match="3 weights for 2 runs"):
        load_ensemble([a, b], tiny_data_master, weights=[1, 1, 1])
    with pytest.raises(ConfigError, match="non-negative"):
        load_ensemble([a, b], tiny_data_master, weights=[1, -1])
    with pytest.raises(CheckpointError) as refused:
        load_ensemble([a, other_data_run], tiny_data_master)
    message = str(refused.value)
    assert f"runs {a} and {other_data_run}" in message
    assert "schema.num_tags: 60 vs 70" in message


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(args)
    except SystemExit as exc:  # argparse's refusal of a flag
        code = int(str(exc.code))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_reports_every_run_and_the_ensemble(
    runs: list[Path], tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["ensemble", "--runs", *map(str, runs), "--data", str(tiny_data_master)]
    code, out, _ = run_cli([*base, "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["split"] == "valid" and result["rows"] == 500 and result["weights"] == [0.5, 0.5]
    assert [entry["run"] for entry in result["runs"]] == [str(r) for r in runs]
    ensemble = mmctr.load_ensemble(runs, tiny_data_master, device="cpu")
    assert result["ensemble"] == pytest.approx(ensemble.evaluate("valid"), abs=1e-9)
    code, out, _ = run_cli([*base, "--weights", "fitted"], capsys)
    assert code == 0 and "ensemble, mean" in out and "ensemble, fitted" in out
    zipped = tmp_path / "sub.zip"
    code, out, _ = run_cli([*base, "--split", "test", "--out", str(zipped), "--json"], capsys)
    assert code == 0 and json.loads(out)["out"] == str(zipped)
    with zipfile.ZipFile(zipped) as zf:
        assert zf.namelist() == ["prediction.csv"]
        table = np.loadtxt(io.StringIO(zf.read("prediction.csv").decode()), delimiter=",",
                           skiprows=1)  # fmt: skip
    assert table.shape == (500, 2) and (table[:, 0] == np.arange(500)).all()
    assert np.abs(table[:, 1] - ensemble.predict("test")).max() <= 1e-7


def test_cli_members_match_evaluate(
    runs: list[Path], tiny_data_master: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["ensemble", "--runs", *map(str, runs), "--data", str(tiny_data_master), "--json"]
    result = json.loads(run_cli(base, capsys)[1])
    for run, entry in zip(runs, result["runs"], strict=True):
        args = ["evaluate", "--run", str(run), "--data", str(tiny_data_master), "--json"]
        alone = json.loads(run_cli(args, capsys)[1])
        for key in ("auc", "logloss", "gauc"):
            assert entry[key] == pytest.approx(alone[key], abs=1e-6)


def unlabelled_valid(data: Path) -> Path:
    table = pq.read_table(data / "valid.parquet")
    pq.write_table(table.drop_columns(["label"]), data / "valid.parquet")
    return data


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--runs", "{a}"], "at least two runs, got 1"),
        (["--runs", "{a}", "{b}", "{a}"], "is listed twice"),
        (["--runs", "{a}", "{c}"], "schema.num_tags: 60 vs 70"),
        (["--runs", "{a}", "{b}", "--out", "sub.csv"], "must be a .zip file"),
        (["--runs", "{a}", "{b}", "--data-unlabelled"], "has no labels to report on"),
        (["--runs", "{a}", "{b}", "--data-unlabelled", "--split", "test", "--weights", "fitted",
          "--out", "{tmp}/s.zip"], "--weights fitted needs labels in valid"),
        (["--runs", "{a}", "{b}", "--weights", "best"], "invalid choice"),
    ],
)  # fmt: skip
def test_cli_refusals(
    extra: list[str], words: str, runs: list[Path], other_data_run: Path,
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    names = {"a": str(runs[0]), "b": str(runs[1]), "c": str(other_data_run), "tmp": str(tmp_path)}
    args = [part.format(**names) for part in extra if part != "--data-unlabelled"]
    if "--data-unlabelled" in extra:
        unlabelled_valid(tiny_data)
    code, _, err = run_cli(["ensemble", *args, "--data", str(tiny_data)], capsys)
    assert code == 2 and words in err, err
    if "num_tags" in words:
        assert names["a"] in err and names["c"] in err
    assert not (tmp_path / "s.zip").exists()


def test_an_unlabelled_split_writes_a_submission(
    runs: list[Path], tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unlabelled_valid(tiny_data)
    zipped = tmp_path / "valid.zip"
    args = ["ensemble", "--runs", *map(str, runs), "--data", str(tiny_data), "--json"]
    code, out, _ = run_cli([*args, "--out", str(zipped)], capsys)
    result: dict[str, Any] = json.loads(out)
    assert code == 0 and zipped.exists() and result["ensemble"] == {}
    assert [set(r) for r in result["runs"]] == [{"run"}, {"run"}]


def ensemble_settings(runs: list[Path], data: Path, **limits: Any) -> Any:
    pytest.importorskip("fastapi")
    from mmctr.serve.settings import ServeSettings

    names = tuple(str(r) for r in runs)
    return ServeSettings(run=names[0], runs=names, data=str(data), threads=1, **limits)


@pytest.mark.parametrize("model_process", [False, True])
def test_a_server_scores_the_ensemble_as_one_model(
    runs: list[Path], tiny_data_master: Path, model_process: bool
) -> None:
    settings = ensemble_settings(runs, tiny_data_master, weights="0.7,0.3",
                                 model_process=model_process)  # fmt: skip
    from fastapi.testclient import TestClient

    from mmctr.serve.app import build_app
    from mmctr.serve.settings import ServeSettings, load_served

    assert ServeSettings.from_json(settings.to_json()) == settings  # what --workers N hands on
    served = load_served(settings)
    ensemble = mmctr.load_ensemble(runs, tiny_data_master, weights=[0.7, 0.3], device="cpu")
    request = {"history": [3, 1, 4, 1, 5], "context": {"likes_level": 3, "views_level": 1},
               "candidates": [9, 2, 6]}  # fmt: skip
    expected = ensemble.score_groups([([3, 1, 4, 1, 5], [3, 1], [9, 2, 6])])[0]
    with TestClient(build_app(served)) as client:
        answer = client.post("/v1/score", json=request)
        assert answer.status_code == 200, answer.text
        assert np.abs(np.asarray(answer.json()["scores"]) - expected).max() <= 1e-6
        assert answer.json()["run"].count("@") == 2 and "+din@" in answer.json()["run"]
        model = client.get("/v1/model").json()
        assert model["model"]["kind"] == "ensemble" and "run_dirs" not in model  # no paths
        members = model["model"]["members"]
        assert [m["kind"] for m in members] == ["target_transformer", "din"]
        assert [m["weight"] for m in members] == pytest.approx([0.7, 0.3])
        items = ensemble.items
        new = {"tags": items.tags[4].tolist(), "emb": items.emb[4].tolist()}
        n = ensemble.num_items
        assert client.post("/v1/items", json={"items": [new]}).json()["ids"] == [n]
        ensemble.add_items([new["tags"]], [new["emb"]])
        got = client.post("/v1/score", json={**request, "candidates": [n, 4]}).json()["scores"]
        want = ensemble.score_groups([([3, 1, 4, 1, 5], [3, 1], [n, 4])])[0]
        assert np.abs(np.asarray(got) - want).max() <= 1e-6


def test_serve_cli_takes_run_twice(
    runs: list[Path], tiny_data_master: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    uvicorn = pytest.importorskip("uvicorn")
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    a, b = (str(r) for r in runs)
    base = ["serve", "--run", a, "--run", b, "--data", str(tiny_data_master)]
    code, out, _ = run_cli([*base, "--weights", "fitted"], capsys)
    assert code == 0 and seen["host"] == "127.0.0.1"
    assert out.startswith("mmctr serve: run run@") and f"({a}, {b})" in out
    refusals = [
        (["serve", "--run", a, "--data", str(tiny_data_master), "--weights", "fitted"],
         "--weights is for an ensemble"),
        (["serve", "--run", a, "--run", a, "--data", str(tiny_data_master)], "listed twice"),
        ([*base, "--weights", "0.7;0.3"], "give mean, fitted or one number a run"),
        ([*base, "--weights", "1,2,3"], "3 weights for 2 runs"),
    ]  # fmt: skip
    for args, words in refusals:
        code, _, err = run_cli(args, capsys)
        assert code == 2 and words in err, err
