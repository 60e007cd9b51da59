"""Cold start through the faces: `mmctr items add`, and new items in `load_run` and `score`."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import mmctr
from mmctr.cli.main import main
from mmctr.errors import DataError


@pytest.fixture(scope="module")
def run(tiny_run_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the shared tiny run: these tests register items with it."""
    out = tmp_path_factory.mktemp("items") / "run"
    shutil.copytree(tiny_run_master, out)
    return out


def items_file(path: Path, tags: list[list[int]], emb: list[list[float]]) -> Path:
    pq.write_table(pa.table({"item_tags": tags, "item_emb": emb}), path)
    return path


def test_added_items_score_from_tags_and_embedding(
    run: Path, tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scorer = mmctr.load_run(run, tiny_data_master, device="cpu")
    n = scorer.num_items
    tags, emb = scorer.items.tags[4].tolist(), scorer.items.emb[4].tolist()
    new_file = items_file(tmp_path / "new.parquet", [tags], [emb])
    code = main(["items", "add", "--run", str(run), "--data", str(tiny_data_master),
                 "--items", str(new_file), "--json"])  # fmt: skip
    assert code == 0 and f'"ids": [{n}]' in capsys.readouterr().out
    again = mmctr.load_run(run, tiny_data_master, device="cpu")
    assert again.num_items == n + 1
    history, context = [[5, 9, 2]], [[1, 2]]
    new = again.score(history, [n], context)
    scorer.model.items.mark_new_items(torch.tensor([4]))  # item 4 without its learned id
    assert np.allclose(new, scorer.score(history, [4], context), atol=1e-6)
    assert main(["items", "add", "--run", str(run), "--data", str(tiny_data_master),
                 "--items", str(tmp_path / "new.parquet")]) == 0  # fmt: skip
    assert mmctr.load_run(run, tiny_data_master).num_items == n + 2, "a second add appends"


def test_in_memory_registration_and_refusals(run: Path, tiny_data_master: Path) -> None:
    scorer = mmctr.load_run(run, tiny_data_master, device="cpu")
    t, d = scorer.schema.tags_per_item, scorer.schema.emb_dim
    ids = scorer.add_items(np.ones((2, t), dtype=np.int64), np.zeros((2, d)))
    assert ids.tolist() == [scorer.num_items - 2, scorer.num_items - 1]
    with pytest.raises(DataError, match="has a tag outside"):
        scorer.add_items(np.full((1, t), 10**6), np.zeros((1, d)))
    with pytest.raises(DataError, match="NaN or infinite"):
        scorer.add_items(np.ones((1, t), dtype=np.int64), np.full((1, d), np.nan))
    with pytest.raises(DataError, match=f"{d} values an item"):
        scorer.add_items(np.ones((1, t), dtype=np.int64), np.zeros((1, d + 1)))
    with pytest.raises(ValueError, match="outside the model's vocabulary"):
        scorer.score([[1]], [scorer.num_items], [[0, 0]])


def test_items_add_refuses_bad_files(
    run: Path, tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"title": ["a red bike"], "item_tags": [[1, 2, 3]]}), bad)
    args = ["items", "add", "--run", str(run), "--data", str(tiny_data_master), "--items"]
    assert main([*args, str(bad)]) == 2
    assert "needs --pca FILE" in capsys.readouterr().err
    pq.write_table(pa.table({"item_emb": [[0.0]]}), bad)
    assert main([*args, str(bad)]) == 2
    assert "missing column 'item_tags'" in capsys.readouterr().err
    bad.write_text("not parquet")
    assert main([*args, str(bad)]) == 2
    assert "cannot read it as parquet" in capsys.readouterr().err


def test_items_add_embeds_titles_with_the_datas_saved_pca(
    run: Path, tiny_data_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pytest.importorskip("sklearn", reason="the embed extra is not installed")
    from test_embed import FakeText

    from mmctr.prepare.embed import embed_items, encoders

    scorer = mmctr.load_run(run, tiny_data_master, device="cpu")
    dim, n = scorer.schema.emb_dim, scorer.num_items
    text = FakeText(dim=dim + 16)
    monkeypatch.setattr(encoders, "text_encoder", lambda spec, allow_download=False: text)
    corpus = [f"a title about topic {i}" for i in range(dim + 40)]
    emb, pca = embed_items(np.arange(1, len(corpus) + 1), corpus, None, dim=dim,
                           text_encoder=text, progress=False)  # fmt: skip
    pca.save(tmp_path / "titles.pca.npz")
    tags = [scorer.items.tags[4].tolist()] * 2
    pq.write_table(pa.table({"item_tags": tags, "title": [corpus[7], corpus[3]]}),
                   tmp_path / "titled.parquet")  # fmt: skip
    args = ["items", "add", "--run", str(run), "--data", str(tiny_data_master),
            "--items", str(tmp_path / "titled.parquet"), "--json"]  # fmt: skip
    assert main(args) == 2 and "needs --pca" in capsys.readouterr().err
    assert main([*args, "--pca", str(tmp_path / "titles.pca.npz")]) == 0
    assert f'"ids": [{n}, {n + 1}]' in capsys.readouterr().out
    # the new items carry the embeddings their titles got when the PCA was fitted
    encoder = mmctr.load_run(run, tiny_data_master, device="cpu").model.items
    added = encoder.item_emb[n : n + 2].numpy()
    assert np.allclose(added, emb[[7, 3]], atol=1e-5)
