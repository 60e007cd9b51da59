"""A run folder carries the item table it was trained with (RUN/items.npz): load_run, export,
serve and `mmctr items add` work from the run alone; a data folder given as well is checked
against it; runs written before it keep working with their data folder; a damaged bundle is
a clear error."""

from __future__ import annotations

import dataclasses
import json
import shutil
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_TOML

import mmctr
from mmctr.cli.main import main
from mmctr.config import Config
from mmctr.data import load_dataset
from mmctr.errors import CheckpointError
from mmctr.prepare import synth
from mmctr.prepare.embed import FittedPCA
from mmctr.training import bundle

FEATURES = "data.item_feature_cols=likes_level,views_level"  # the bundle keeps them too
OLD_RUN = Path(__file__).parent / "fixtures" / "runs-0.1.0" / "seed-model"
TEXT_WIDTH = 160  # of the fake text encoder behind the data's PCA (more than emb_dim)


def fake_pca(dim: int) -> FittedPCA:
    """A PCA of a fake text encoder, as `mmctr convert` leaves beside computed embeddings."""
    rng = np.random.default_rng(0)
    components = np.linalg.qr(rng.normal(size=(TEXT_WIDTH, dim)))[0].T  # (dim, TEXT_WIDTH)
    return FittedPCA(
        mean=rng.normal(size=TEXT_WIDTH) * 0.01, components=components,
        explained_variance=np.linspace(2.0, 1.0, dim), total_variance=40.0, whiten=False,
        modalities=(("text", "fake-text", TEXT_WIDTH),), n_items=100,
    )  # fmt: skip


@pytest.fixture(scope="module")
def shipped(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(run, data): a run trained (with item features) on a private copy of the tiny data,
    whose folder (with a PCA file, as `mmctr convert` writes) is moved away afterwards."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bundle")
    data, run = root / "data", root / "run"
    shutil.copytree(tiny_data_master, data)
    emb_dim = len(pq.read_table(data / "item_info.parquet").column("item_emb_d128")[0])
    fake_pca(emb_dim).save(data / "item_emb.pca.npz")
    config = Config.from_dict(tomllib.loads(TINY_TOML))
    sets = ["train.epochs=1", FEATURES]
    mmctr.train(data, config, run, overrides=sets, log=lambda _: None)
    moved = root / "moved-data"
    data.rename(moved)
    return run, moved


def copy(run: Path, tmp_path: Path, name: str = "run") -> Path:
    shutil.copytree(run, tmp_path / name)
    return tmp_path / name


def test_the_bundle_holds_the_trained_table(shipped: tuple[Path, Path]) -> None:
    run, data = shipped
    scorer = mmctr.load_run(run, device="cpu")
    kept = bundle.read_bundle(run, scorer.schema)
    assert kept is not None and kept.num_registered == 0 and kept.held_out.size == 0
    table = load_dataset(data, scorer.config.data, (), schema=scorer.schema).items
    assert np.array_equal(kept.items.tags, table.tags) and np.array_equal(kept.items.emb, table.emb)
    assert kept.items.feature_matrix.shape[1] == 2
    assert np.array_equal(kept.items.feature_matrix, table.feature_matrix)
    want = fake_pca(scorer.schema.emb_dim)
    assert kept.pca is not None and np.array_equal(kept.pca.components, want.components)
    with np.load(run / bundle.BUNDLE_FILE, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
    assert header["fingerprint"] == json.loads((run / "summary.json").read_text())["fingerprint"]
    assert header["item_feature_cols"] == ["likes_level", "views_level"]
    assert header["arrays"]["emb"] == {"dtype": "<f4", "shape": list(table.emb.shape)}


def test_load_run_scores_without_the_data_as_with_it(
    shipped: tuple[Path, Path], tmp_path: Path
) -> None:
    run, data = shipped
    alone = mmctr.load_run(run, device="cpu")
    assert alone.data_dir is None
    valid = mmctr.load_run(run, data, device="cpu").split("valid")
    old_style = copy(run, tmp_path)  # the data folder's item_info, as before bundles
    (old_style / bundle.BUNDLE_FILE).unlink()
    expected = mmctr.load_run(old_style, data, device="cpu").predict(valid)
    assert np.array_equal(alone.predict(valid), expected)
    assert np.array_equal(mmctr.load_run(run, data, device="cpu").predict(valid), expected)
    with pytest.raises(CheckpointError, match="no data folder to read rows from"):
        alone.predict("valid")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_export_without_data(
    shipped: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data = shipped
    out = tmp_path / "model.pt"
    args = ["export", "--run", str(run), "--format", "torchscript", "--out", str(out), "--json"]
    assert main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["max_abs_diff_check"] <= 1e-5 and info["interface"]["num_items"] > 1
    scorer = mmctr.load_run(run, data, device="cpu")
    valid = scorer.split("valid").take(slice(0, 64))
    from mmctr.export import fit_history

    graph = torch.jit.load(str(out))
    inputs = (fit_history(scorer.model, valid.history), valid.target, valid.context)
    with torch.no_grad():
        prob = graph(*(torch.from_numpy(np.asarray(a, dtype=np.int64)) for a in inputs))[0]
    assert np.abs(prob.numpy() - scorer.predict(valid)).max() <= 1e-5


def test_serve_without_data(
    shipped: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import uvicorn
    from fastapi.testclient import TestClient

    from mmctr.serve.app import build_app
    from mmctr.serve.settings import ServeSettings, load_served

    run, data = shipped
    app = build_app(load_served(ServeSettings(run=str(run), threads=1)))
    request = {"history": [3, 1, 4], "context": {"likes_level": 3, "views_level": 1},
               "candidates": [9, 2, 6]}  # fmt: skip
    with TestClient(app) as client:
        answer = client.post("/v1/score", json=request)
        assert answer.status_code == 200, answer.text
        info = client.get("/v1/model").json()
    expected = mmctr.load_run(run, data, device="cpu").score(
        [[3, 1, 4]] * 3, [9, 2, 6], [[3, 1]] * 3
    )
    assert np.allclose(answer.json()["scores"], expected, atol=1e-6)
    assert info["vocab"]["items"] == len(mmctr.load_run(run).items.tags)
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    assert main(["serve", "--run", str(run)]) == 0
    assert seen["port"] == 8000 and "mmctr serve: run run@" in capsys.readouterr().out
    assert main(["serve", "--run", str(run), "--run", str(run), "--weights", "fitted"]) == 2
    assert "--weights fitted fits on the data's valid split: give --data" in capsys.readouterr().err


def test_data_of_another_schema_is_refused(
    shipped: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, _ = shipped
    other = tmp_path / "other"
    synth.generate(other, dataclasses.replace(synth.PRESETS["tiny"], num_items=400),
                   progress=False)  # fmt: skip
    mine = json.loads((run / "summary.json").read_text())["fingerprint"]
    out, new = tmp_path / "m.pt", tmp_path / "new.parquet"
    pq.write_table(pa.table({"item_tags": [[1, 2]], "item_emb": [[0.0] * 4]}), new)
    given = ["--run", str(run), "--data", str(other)]
    for args in (["export", *given, "--format", "torchscript", "--out", str(out)],
                 ["serve", *given], ["items", "add", *given, "--items", str(new)]):  # fmt: skip
        code, err = main(args), capsys.readouterr().err
        assert code == 2, (args, err)
        assert "does not match the one the model was trained on" in err, args
        assert f"fingerprint {mine}" in err and "num_items: model 300 vs data 400" in err
    assert not out.exists() and mmctr.load_run(run).num_items == 300
    with pytest.raises(CheckpointError, match=mine):
        mmctr.load_run(run, other)


def test_data_of_the_same_schema_but_other_items_is_warned_about(
    shipped: tuple[Path, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run, data = shipped
    changed = tmp_path / "changed"
    shutil.copytree(data, changed)
    table = pq.read_table(changed / "item_info.parquet")
    emb = table.column("item_emb_d128").to_pylist()
    emb[5] = [v + 1.0 for v in emb[5]]
    index = table.column_names.index("item_emb_d128")
    pq.write_table(table.set_column(index, "item_emb_d128", pa.array(emb, pa.list_(pa.float32()))),
                   changed / "item_info.parquet")  # fmt: skip
    with caplog.at_level("WARNING", logger="mmctr.training"):
        scorer = mmctr.load_run(run, changed, device="cpu")
    assert (
        "its item table differs from the one" in caplog.text
        and "scoring with the run's" in caplog.text
    )
    assert np.array_equal(scorer.items.emb, mmctr.load_run(run).items.emb)  # the run's own


def test_a_run_written_before_bundles(
    tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = copy(OLD_RUN, tmp_path)
    expected = json.loads((OLD_RUN.parent / "expected.json").read_text())["runs"]["seed-model"]
    scorer = mmctr.load_run(run, tiny_data_master, device="cpu")
    assert scorer.num_items == expected["num_items"]  # with its new_items.parquet
    with pytest.raises(CheckpointError, match=r"predates runs that keep theirs.*needs the data"):
        mmctr.load_run(run)
    out = tmp_path / "m.pt"
    for args in (["export", "--format", "torchscript", "--out", str(out)], ["serve"]):
        assert main([args[0], "--run", str(run), *args[1:]]) == 2
        assert "keeps no item table (items.npz)" in capsys.readouterr().err
    assert not (run / bundle.BUNDLE_FILE).exists()


def test_items_add_without_data(shipped: tuple[Path, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    run = copy(shipped[0], tmp_path)
    scorer = mmctr.load_run(run, device="cpu")
    n = scorer.num_items
    tags, emb = scorer.items.tags[4].tolist(), scorer.items.emb[4].tolist()
    new = tmp_path / "new.parquet"
    pq.write_table(pa.table({"item_tags": [tags], "item_emb": [emb], "likes_level": [2]}), new)
    args = ["items", "add", "--run", str(run), "--items", str(new), "--json"]
    assert main(args) == 0 and f'"ids": [{n}]' in capsys.readouterr().out
    assert main(args) == 0 and f'"ids": [{n + 1}]' in capsys.readouterr().out
    again = mmctr.load_run(run, device="cpu")
    assert again.num_items == n + 2 and not (run / "new_items.parquet").exists()
    assert again.model.items.item_features[n].tolist() == [2, 0]
    expected = scorer.add_items([tags] * 2, [emb] * 2, [[2, 0]] * 2)
    assert expected.tolist() == [n, n + 1]
    history, context = [[5, 9, 2]] * 2, [[1, 2]] * 2
    got = again.score(history, [n, n + 1], context)
    assert np.allclose(got, scorer.score(history, [n, n + 1], context), atol=1e-6)


def test_items_add_embeds_titles_with_the_pca_the_run_keeps(
    shipped: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from test_embed import FakeText

    from mmctr.prepare.embed import encoders

    run = copy(shipped[0], tmp_path)
    text = FakeText(name="fake-text", dim=TEXT_WIDTH)
    monkeypatch.setattr(encoders, "text_encoder", lambda spec, allow_download=False: text)
    scorer = mmctr.load_run(run, device="cpu")
    titles = ["a title about cats", "another about dogs"]
    pq.write_table(pa.table({"item_tags": [scorer.items.tags[4].tolist()] * 2, "title": titles}),
                   tmp_path / "titled.parquet")  # fmt: skip
    args = ["items", "add", "--run", str(run), "--items", str(tmp_path / "titled.parquet")]
    assert main(args) == 0, capsys.readouterr().err
    added = mmctr.load_run(run, device="cpu").model.items.item_emb[scorer.num_items :].numpy()
    want = fake_pca(scorer.schema.emb_dim).project(FakeText(dim=TEXT_WIDTH).encode(titles))
    assert np.allclose(added, want, atol=1e-5)


def test_held_out_items_are_kept(shipped: tuple[Path, Path], tmp_path: Path) -> None:
    run = copy(shipped[0], tmp_path)
    schema = mmctr.load_run(run).schema
    kept = bundle.read_bundle(run, schema)
    assert kept is not None
    bundle.write_bundle(run, schema, dataclasses.replace(kept, held_out=np.array([4, 7])))
    rows = mmctr.load_run(run, device="cpu").model.items.id_rows
    assert rows[4] == 0 and rows[7] == 0 and rows[5] == 5
    with pytest.raises(CheckpointError, match="held_out must be trained item ids"):
        bundle.write_bundle(run, schema, dataclasses.replace(kept, held_out=np.array([10**6])))
    assert bundle.read_bundle(run, schema).held_out.tolist() == [4, 7]  # type: ignore[union-attr]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other schema", "shape"])
def test_a_damaged_bundle_is_a_clear_error(
    damage: str, shipped: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, data = shipped
    run = copy(run, tmp_path)
    path = run / bundle.BUNDLE_FILE
    whole = path.read_bytes()
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    header = json.loads(str(arrays["header"]))
    if damage == "truncated":
        path.write_bytes(whole[: len(whole) // 2])
    elif damage == "garbage":
        path.write_bytes(whole[:100] + bytes(200) + whole[300:])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        if damage == "other schema":
            header["fingerprint"] = "0123456789abcdef"
        else:
            arrays["emb"] = arrays["emb"][:, :-1]
            header["arrays"]["emb"]["shape"][1] -= 1
        arrays["header"] = np.array(json.dumps(header))
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    message = {
        "other schema": "holds the item table of data of schema 0123456789abcdef",
        "shape": "emb should be float32",
    }.get(damage, "cannot read the run's item bundle")
    for given in (None, data):  # a data folder does not paper over a damaged bundle
        with pytest.raises(CheckpointError, match=message):
            mmctr.load_run(run, given)
    assert main(["serve", "--run", str(run)]) == 2
    assert message in capsys.readouterr().err


def test_a_failed_write_leaves_the_bundle_as_it_was(
    shipped: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = copy(shipped[0], tmp_path)
    schema = mmctr.load_run(run).schema
    before = (run / bundle.BUNDLE_FILE).read_bytes()
    kept = bundle.read_bundle(run, schema)
    assert kept is not None

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        bundle.write_registered(run, schema, bundle.no_registered(schema))
    assert (run / bundle.BUNDLE_FILE).read_bytes() == before
    assert not [p.name for p in run.iterdir() if p.name.startswith(f".{bundle.BUNDLE_FILE}")]
