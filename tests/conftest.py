"""Shared fixtures: a tiny synthetic data set and a model config small enough for seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from mmctr.config import Config
from mmctr.prepare import synth

TINY_TOML = """
[model]
id_dim = 8
tag_dim = 8
mm_dim = 8
context_dim = 4
max_len = 12

[model.target_transformer]
first_k = 3
ff_dim = 16
seq_dropout = 0.1
deep_mlp = [32, 16]
pred_mlp = [16]

[train]
epochs = 2
patience = 2
batch_size = 256
eval_batch_size = 512
lr = 3e-3
seed = 7
"""


@pytest.fixture(autouse=True)
def _fixed_threads() -> None:
    # deterministic, and no oversubscription on the 2-core CI machine
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_data_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-data")
    synth.generate(out, "tiny", seed=3, progress=False)
    return out


@pytest.fixture
def tiny_data(tiny_data_master: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny data set, free to corrupt."""
    out = tmp_path / "data"
    shutil.copytree(tiny_data_master, out)
    return out


@pytest.fixture
def tiny_config_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture
def tiny_config(tiny_config_file: Path) -> Config:
    from mmctr.config import load_config

    return load_config(tiny_config_file)


@pytest.fixture(scope="session")
def tiny_run_master(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the tiny config trained one epoch on the tiny set; copy it before changing it."""
    import tomllib

    import mmctr

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny-run") / "run"
    config = Config.from_dict(tomllib.loads(TINY_TOML))
    mmctr.train(tiny_data_master, config, out, overrides=["train.epochs=1"], log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def retrained(tiny_data_master: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run trained again with another seed: the same schema, other weights."""
    import tomllib

    import mmctr

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("b") / "run-b"
    config = Config.from_dict(tomllib.loads(TINY_TOML))
    overrides = ["train.epochs=1", "train.seed=8"]
    mmctr.train(tiny_data_master, config, out, overrides=overrides, log=lambda _: None)
    return out


@pytest.fixture
def run(tiny_run_master: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny run, free to change (registering items, reloads write to it)."""
    out = tmp_path / "run"
    shutil.copytree(tiny_run_master, out)
    return out
