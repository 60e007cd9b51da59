"""`mmctr explain`: attention captured without changing outputs, its files, and DIN weights."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmctr.cli import explain as explain_cli
from mmctr.config import Config, load_config
from mmctr.data import load_dataset, make_batch
from mmctr.errors import ConfigError
from mmctr.model import SeedCTR
from mmctr.model.attention_maps import capture_attention
from mmctr.training import checkpoint as ckpt
from mmctr.training import run as runs
from mmctr.training.inference import attach_items

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli(*args: str | Path) -> int:
    """Run `mmctr explain ...` through the subcommand's own parser."""
    parser = argparse.ArgumentParser(prog="mmctr")
    explain_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args([str(a) for a in args])
    code: int = parsed.func(parsed)
    return code


def train_one_epoch(data_dir: Path, config: Config, run_dir: Path) -> Path:
    config = config.with_overrides(["train.epochs=1"])
    data = load_dataset(data_dir, config.data, ("train", "valid"))
    runs.train(data, config, run_dir, progress=False, log=lambda _: None)
    return run_dir


def test_capture_keeps_outputs_and_attends_to_real_items_only(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path
) -> None:
    run = train_one_epoch(tiny_data_master, tiny_config, tmp_path / "run")
    trained = ckpt.load_trained(run)
    data = load_dataset(tiny_data_master, trained.config.data, ("valid",), schema=trained.schema)
    model = trained.model
    assert isinstance(model, SeedCTR)
    attach_items(model, data.items)
    model.eval()
    batch = make_batch(data["valid"], slice(0, 64))
    execution = model.execution
    with torch.inference_mode():
        plain = model(batch.history, batch.target, batch.context)
        with capture_attention(model) as recorder:
            captured = model(batch.history, batch.target, batch.context)
    assert torch.allclose(captured, plain, atol=1e-5)
    assert model.cfg == trained.config.model, "the config is restored after capture"
    assert model.execution == execution, "and so is the execution"
    attention = recorder.stacked()  # (B, layers, H, L, L)
    assert attention.shape == (64, 2, 1, 12, 12)
    window = batch.history[:, -trained.config.model.max_len :]  # the 12 positions it reads
    real = window.ne(0)[:, None, None, None, :].expand_as(attention)
    assert torch.equal(attention[~real], torch.zeros_like(attention[~real]))
    assert torch.allclose(attention.sum(-1), torch.ones(attention.shape[:-1]), atol=1e-5)


def test_explain_writes_arrays_and_figures_and_compares_masks(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = train_one_epoch(tiny_data_master, tiny_config, tmp_path / "run")
    out = tmp_path / "explain"
    assert cli("explain", "--run", run, "--data", tiny_data_master, "--rows", "4",
               "--out", out, "--compare-mask") == 0  # fmt: skip
    assert "wrote attention of 4 valid rows" in capsys.readouterr().out
    arrays = np.load(out / "attention.npz")
    history, attention = arrays["history"], arrays["attention"]
    assert attention.shape == (4, 2, 1, 12, 12) and list(arrays["rows"]) == [0, 1, 2, 3]
    real = history != 0
    for n in range(4):
        rows_over_real = attention[n][..., real[n]].sum(-1)
        assert np.allclose(rows_over_real, 1.0, atol=1e-5)
        assert np.all(attention[n][..., ~real[n]] == 0.0)
        assert np.allclose(arrays["received"][n].sum(-1), 1.0, atol=1e-5)
    short = [n for n in range(4) if 0 < real[n].sum() < 12]
    assert short, "the tiny data should hold histories shorter than the window"
    released = arrays["received_released"]
    for n in short:  # the released mask looks at padding only
        assert np.allclose(released[n][:, ~real[n]].sum(-1), 1.0, atol=1e-5)
    assert arrays["probs_released"].shape == (4,)
    info = json.loads((out / "explain.json").read_text())
    assert [r["row"] for r in info["rows"]] == [0, 1, 2, 3] and info["compare_mask"]
    assert info["rows"][0]["history"] == [int(i) for i in history[0] if i != 0]
    for row in info["rows"]:
        assert (out / row["figure"]).read_bytes().startswith(PNG_MAGIC)


def test_explain_din_weights_and_refusals(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path
) -> None:
    din = load_config(
        CONFIGS / "din.toml",
        [
            *("model.id_dim=8", "model.tag_dim=8", "model.mm_dim=8", "model.context_dim=4"),
            *("model.din.attention_mlp=8", "model.din.mlp=8", "train.batch_size=512"),
        ],
    )
    din = Config(data=tiny_config.data, model=din.model, train=din.train)
    run = train_one_epoch(tiny_data_master, din, tmp_path / "din")
    out = tmp_path / "explain"
    code = cli("explain", "--run", run, "--data", tiny_data_master, "--rows", "3", "--out", out)
    assert code == 0
    arrays = np.load(out / "attention.npz")
    weights, history = arrays["weights"], arrays["history"]
    assert weights.shape == history.shape == (3, 64)
    assert np.all(weights[history == 0] == 0.0) and np.any(weights[history != 0] != 0.0)
    assert (out / "row-2.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(ConfigError, match="--compare-mask applies to the target-aware Transformer"):
        cli("explain", "--run", run, "--data", tiny_data_master, "--rows", "1",
            "--out", out, "--compare-mask")  # fmt: skip
    flat = train_one_epoch(
        tiny_data_master,
        tiny_config.with_overrides(["model.target_transformer.use_sequence=false"]),
        tmp_path / "f",
    )
    with pytest.raises(ConfigError, match="no attention over the history"):
        cli("explain", "--run", flat, "--data", tiny_data_master, "--rows", "1", "--out", out)
    with pytest.raises(ConfigError, match="choose rows >= 1"):
        cli("explain", "--run", run, "--data", tiny_data_master, "--rows", "0", "--out", out)
