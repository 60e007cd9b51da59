"""Adding a model is one file: a kind defined and registered here, through the public factory
alone, trains, resumes, evaluates, predicts, exports and serves with no change to training/,
serve/ or export/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import mmctr
from mmctr.cli.main import main
from mmctr.config import DataDims, ModelConfig

KIND = "mean_pool_stub"
STUB_TOML = f"""
[model]
kind = "{KIND}"
id_dim = 8
tag_dim = 8
mm_dim = 8
context_dim = 4
max_len = 12

[model.{KIND}]
hidden = 8

[train]
epochs = 2
patience = 2
batch_size = 256
eval_batch_size = 512
lr = 3e-3
seed = 11
"""


@dataclass(frozen=True)
class MeanPoolConfig:
    hidden: int = 16  # width of the head's hidden layer

    def __post_init__(self) -> None:
        if self.hidden < 1:
            raise ValueError(f"model.{KIND}.hidden must be >= 1, got {self.hidden}")


@mmctr.register_model(KIND, MeanPoolConfig)
class MeanPool(mmctr.CTRModel):
    """[context, target, masked mean of the history's item vectors] -> MLP -> logit."""

    def __init__(self, cfg: ModelConfig, dims: DataDims) -> None:
        super().__init__()
        self._init_inputs(cfg, dims)
        width = self.context.out_dim + 2 * self.items.out_dim
        hidden = cfg.section(MeanPoolConfig).hidden
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(
        self, history: torch.Tensor, target: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        history = self.window(history)  # (B, L)
        real = history.ne(0).unsqueeze(-1).float()  # (B, L, 1)
        pooled = (self.items(history) * real).sum(1) / real.sum(1).clamp(min=1.0)
        x = torch.cat([self.context(context), self.items(target), pooled], dim=-1)
        return self.head(x).squeeze(-1)


class StopAfterFirstEpoch:
    """A monitor that interrupts training once epoch 1 is saved, as a kill would."""

    def epoch(self, epoch: int, step_losses: torch.Tensor, record: dict[str, Any]) -> None:
        if epoch == 1:
            raise KeyboardInterrupt


@pytest.fixture
def stub_config(tmp_path: Path) -> Path:
    path = tmp_path / "stub.toml"
    path.write_text(STUB_TOML)
    return path


def test_a_kind_registered_here_trains_resumes_and_scores(
    stub_config: Path, tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, whole, killed = str(tiny_data_master), tmp_path / "whole", tmp_path / "killed"
    assert main(["train", "--data", data, "--config", str(stub_config), "--out", str(whole)]) == 0
    with pytest.raises(KeyboardInterrupt):
        mmctr.train(data, stub_config, killed, log=lambda _: None, monitor=StopAfterFirstEpoch())
    assert not (killed / "summary.json").exists()
    resumed = mmctr.train(data, stub_config, killed, resume=True, log=lambda _: None)
    assert resumed.epochs_run == 2
    capsys.readouterr()
    for run in (whole, killed):
        assert main(["evaluate", "--run", str(run), "--data", data, "--json"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["auc"] == pytest.approx(second["auc"], abs=1e-9)  # resuming changed nothing
    assert json.loads((whole / "config.json").read_text())["model"][KIND] == {"hidden": 8}
    out = tmp_path / "submission.zip"
    assert main(["predict", "--run", str(whole), "--data", data, "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        assert len(archive.namelist()) == 1


def test_a_kind_registered_here_exports_and_serves(
    stub_config: Path, tiny_data_master: Path, tmp_path: Path
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmctr.export import export_run
    from mmctr.serve.app import build_app
    from mmctr.serve.settings import ServeSettings, load_served

    run = tmp_path / "run"
    mmctr.train(tiny_data_master, stub_config, run, overrides=["train.epochs=1"], log=print)
    info = export_run(run, tiny_data_master, "torchscript", tmp_path / "stub.pt")
    assert info["max_abs_diff_check"] < 1e-5, info
    assert info["interface"]["model_kind"] == KIND
    scorer = mmctr.load_run(run, tiny_data_master, device="cpu")
    expected = scorer.score([[3, 1, 4]] * 2, [9, 2], [[3, 1]] * 2)
    app = build_app(load_served(ServeSettings(run=str(run), data=str(tiny_data_master), threads=1)))
    with TestClient(app) as client:
        body = {"history": [3, 1, 4], "context": {"likes_level": 3, "views_level": 1}}
        answer = client.post("/v1/score", json={**body, "candidates": [9, 2]})
    assert answer.status_code == 200, answer.text
    assert np.allclose(answer.json()["scores"], expected, atol=1e-6)


def test_a_kind_section_is_checked_like_the_shipped_ones(stub_config: Path) -> None:
    from mmctr.errors import ConfigError

    config = mmctr.load_config(stub_config, [f"model.{KIND}.hidden=4"])
    assert config.model.section(MeanPoolConfig).hidden == 4
    with pytest.raises(ConfigError, match=f"model.{KIND}.hidden must be >= 1"):
        mmctr.load_config(stub_config, [f"model.{KIND}.hidden=0"])
    with pytest.raises(ConfigError, match=f"unknown key model.{KIND}.width"):
        mmctr.load_config(stub_config, [f"model.{KIND}.width=4"])


PLUGIN = '''
"""A model kind in one file, outside mmctr: found through MMCTR_MODELS."""
from dataclasses import dataclass

import torch
from torch import nn

from mmctr.model import CTRModel, register_model


@dataclass(frozen=True)
class LastItemConfig:
    hidden: int = 8


@register_model("last_item_plugin", LastItemConfig)
class LastItem(CTRModel):
    def __init__(self, cfg, dims):
        super().__init__()
        self._init_inputs(cfg, dims)
        width = self.context.out_dim + 2 * self.items.out_dim
        hidden = cfg.section(LastItemConfig).hidden
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, history, target, context):
        last = self.items(self.window(history)[:, -1])
        x = torch.cat([self.context(context), self.items(target), last], dim=-1)
        return self.head(x).squeeze(-1)
'''


def test_a_kind_in_a_file_of_its_own_is_found_by_the_cli_and_the_model_process(
    stub_config: Path, tiny_data_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmctr.serve.app import build_app
    from mmctr.serve.settings import ServeSettings, load_served

    (tmp_path / "last_item_plugin.py").write_text(PLUGIN)
    config = tmp_path / "plugin.toml"
    config.write_text(stub_config.read_text().replace(KIND, "last_item_plugin"))
    env = {**os.environ, "MMCTR_MODELS": "last_item_plugin", "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    run, data = tmp_path / "run", str(tiny_data_master)
    mmctr_cli = [sys.executable, "-m", "mmctr"]
    train = [*mmctr_cli, "train", "--data", data, "--config", str(config), "--out", str(run)]
    subprocess.run([*train, "--set", "train.epochs=1"], env=env, check=True, timeout=300)
    evaluate = [*mmctr_cli, "evaluate", "--run", str(run), "--data", data, "--json"]
    done = subprocess.run(evaluate, env=env, check=True, timeout=300, capture_output=True)
    auc = json.loads(done.stdout)["auc"]
    without = {k: v for k, v in env.items() if k != "MMCTR_MODELS"}
    refused = subprocess.run(evaluate, env=without, timeout=300, capture_output=True, text=True)
    assert refused.returncode == 2 and "last_item_plugin" in refused.stderr
    # the served model's own (spawned) process finds the kind the same way
    monkeypatch.setenv("MMCTR_MODELS", "last_item_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = ServeSettings(run=str(run), data=data, threads=1, model_process=True)
    with TestClient(build_app(load_served(settings))) as client:
        body = {"history": [3, 1, 4], "context": {"likes_level": 3, "views_level": 1}}
        answer = client.post("/v1/score", json={**body, "candidates": [9, 2]})
    assert answer.status_code == 200, answer.text
    assert 0.0 < auc < 1.0
