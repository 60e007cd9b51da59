"""mmctr export: the written graphs reproduce ``predict`` (seed model and DIN, ONNX and
TorchScript), keep a dynamic batch, carry their interface, run in onnxruntime without torch,
and are written atomically, refusing to overwrite."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TOML

import mmctr
from mmctr.cli.main import main
from mmctr.config import Config
from mmctr.errors import ConfigError
from mmctr.export import export_run, fit_history

ROWS = 300  # valid rows compared with predict
TOL = 1e-5  # max |prob difference| allowed between an exported graph and predict


@pytest.fixture(scope="module", params=["seed", "din"])
def run(
    request: pytest.FixtureRequest, tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A tiny trained run of each model kind (one epoch)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp(f"export-{request.param}") / "run"
    config = Config.from_dict(tomllib.loads(TINY_TOML))
    sets = ["train.epochs=1", f"model.kind={request.param}"]
    mmctr.train(tiny_data_master, config, out, overrides=sets, log=lambda _: None)
    return out


@pytest.fixture(scope="module")
def expected(run: Path, tiny_data_master: Path) -> dict[str, np.ndarray]:
    """The graph's inputs for the first ROWS valid rows and what ``predict`` gives them."""
    scorer = mmctr.load_run(run, tiny_data_master, device="cpu")
    valid = scorer.split("valid")
    return {
        "history": fit_history(scorer.model, valid.history[:ROWS]),
        "target": valid.target[:ROWS].astype(np.int64),
        "context": valid.context[:ROWS].astype(np.int64),
        "prob": scorer.predict(valid)[:ROWS],
    }


@pytest.fixture(scope="module")
def onnx_file(run: Path, tiny_data_master: Path) -> Path:
    pytest.importorskip("onnxscript")
    out = run.parent / "model.onnx"
    info = export_run(run, tiny_data_master, "onnx", out)
    assert info["bytes"] == out.stat().st_size
    return out


def test_onnx_reproduces_predict(onnx_file: Path, expected: dict[str, np.ndarray]) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["history", "target", "context"]
    assert [o.name for o in session.get_outputs()] == ["prob", "logit"]
    feeds = {k: expected[k] for k in ("history", "target", "context")}
    prob, logit = session.run(None, feeds)
    assert prob.dtype == np.float32 and prob.shape == (ROWS,)
    assert np.abs(prob - expected["prob"]).max() <= TOL
    assert np.allclose(1 / (1 + np.exp(-logit)), prob, atol=1e-6)
    for rows in (slice(0, 1), slice(5, 12)):  # the batch dimension is dynamic
        alone = session.run(["prob"], {k: v[rows] for k, v in feeds.items()})[0]
        assert np.abs(alone - expected["prob"][rows]).max() <= TOL


def test_onnx_carries_its_interface(onnx_file: Path, run: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["mmctr"])
    config = json.loads((run / "config.json").read_text())
    assert meta["history_width"] == config["model"]["max_len"] == 12
    assert meta["context_cols"] == ["likes_level", "views_level"]
    assert meta["model_kind"] == config["model"]["kind"]
    assert session.get_inputs()[0].shape == ["batch", 12]


def test_onnx_runs_without_torch(
    onnx_file: Path, expected: dict[str, np.ndarray], tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    arrays = tmp_path / "rows.npz"
    np.savez(arrays, **expected)
    code = (
        "import sys, numpy as np, onnxruntime as ort\n"
        f"rows = np.load({str(arrays)!r})\n"
        f"session = ort.InferenceSession({str(onnx_file)!r}, providers=['CPUExecutionProvider'])\n"
        "feeds = {k: rows[k] for k in ('history', 'target', 'context')}\n"
        "prob = session.run(['prob'], feeds)[0]\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(float(np.abs(prob - rows['prob']).max()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout) <= TOL


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_reproduces_predict(
    run: Path, tiny_data_master: Path, expected: dict[str, np.ndarray], tmp_path: Path
) -> None:
    out = tmp_path / "model.pt"
    export_run(run, tiny_data_master, "torchscript", out)
    extra = {"mmctr.json": ""}
    graph = torch.jit.load(str(out), _extra_files=extra)
    assert json.loads(extra["mmctr.json"])["history_width"] == 12
    inputs = [torch.from_numpy(expected[k]) for k in ("history", "target", "context")]
    with torch.no_grad():
        prob, logit = graph(*inputs)
        one = graph(*(t[:1] for t in inputs))[0]  # the batch dimension is dynamic
    assert prob.dtype == torch.float32 and prob.shape == (ROWS,)
    assert np.abs(prob.numpy() - expected["prob"]).max() <= TOL
    assert np.allclose(torch.sigmoid(logit).numpy(), prob.numpy(), atol=1e-6)
    assert np.abs(one.numpy() - expected["prob"][:1]).max() <= TOL


def test_fit_history_pads_short_histories(run: Path, tiny_data_master: Path) -> None:
    """Stored histories narrower than max_len are left-padded to the graph's width."""
    scorer = mmctr.load_run(run, tiny_data_master, device="cpu")
    valid = scorer.split("valid")
    short = valid.history[:20, -5:]
    fitted = fit_history(scorer.model, short)
    assert fitted.shape == (20, 12) and (fitted[:, :7] == 0).all()
    assert (fitted[:, 7:] == short).all()
    assert np.allclose(
        scorer.score(fitted, valid.target[:20], valid.context[:20]),
        scorer.score(short, valid.target[:20], valid.context[:20]),
        atol=1e-6,
    )


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_cli_writes_atomically_and_refuses_to_overwrite(
    run: Path, tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.pt"
    args = ["export", "--run", str(run), "--data", str(tiny_data_master), "--out", str(out)]
    assert main([*args, "--format", "torchscript"]) == 0
    assert "history (batch, 12) int64" in capsys.readouterr().out
    before = out.read_bytes()
    assert main([*args, "--format", "torchscript"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main([*args, "--format", "torchscript", "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "torchscript"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # no temporary left


def test_cli_bad_format_and_run(
    run: Path, tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "model.onnx"
    data = ["--data", str(tiny_data_master), "--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(["export", "--run", str(run), *data, "--format", "tflite"])
    assert exc.value.code == 2 and "invalid choice: 'tflite'" in capsys.readouterr().err
    assert main(["export", "--run", str(tmp_path / "nope"), *data, "--format", "torchscript"]) == 2
    assert "run directory not found" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(ConfigError, match="format 'tflite' is not one of onnx, torchscript"):
        export_run(run, tiny_data_master, "tflite", out)


def test_cli_offers_the_exporters_formats() -> None:
    """The CLI keeps its own copy of the format names so that ``--help`` imports no torch."""
    from mmctr.cli import export as export_cli
    from mmctr.export import FORMATS

    assert export_cli.FORMATS == FORMATS
