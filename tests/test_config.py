"""Config files and --set overrides: typed, checked, and strict about unknown keys."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mmctr.config import Config, load_config, preset_names
from mmctr.errors import ConfigError
from mmctr.model import TargetTransformerConfig

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_paper_preset_is_the_paper_configuration() -> None:
    cfg = load_config(CONFIGS / "paper.toml")
    m, t = cfg.model, cfg.train
    s = m.section(TargetTransformerConfig)
    assert (m.id_dim, m.tag_dim, m.mm_dim, m.context_dim) == (64, 64, 128, 64)
    assert (m.max_len, s.num_layers, s.num_heads, s.ff_dim, s.first_k) == (100, 2, 1, 256, 16)
    assert s.deep_mlp == (1024, 512, 256) and s.pred_mlp == (64, 32) and s.num_cross_layers == 3
    assert s.mask == "correct" and s.target_concat and s.max_pool
    assert (t.lr, t.batch_size, t.epochs, t.patience, t.seed) == (5e-4, 128, 100, 5, 20242025)
    assert (t.lr_decay, t.min_lr, t.grad_clip, t.weight_decay) == (0.1, 1e-6, 10.0, 0.0)
    assert cfg == Config().with_overrides(
        ["data.context_vocab_sizes=11,11", "data.num_tags=11740"]
    ), "paper.toml should only restate the defaults plus the challenge vocabularies"


def _searched_params(search: str, trial: str) -> list[str]:
    """The `section.key=value` params of one complete trial of docs/results/SEARCH/trials.csv."""
    table = CONFIGS.parent / "docs" / "results" / search / "trials.csv"
    with table.open(newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["trial"] == trial)
    assert row["state"] == "complete"
    params = [f"{k}={v}" for k, v in row.items() if "." in k]
    assert "data.item_feature_cols=likes_level,views_level" in params
    return params


def test_ml50k_tuned_is_the_searched_trial_it_says_on_the_search_s_base() -> None:
    """The preset is trial 2 of docs/results/search-ml50k/trials.csv applied to the search's
    base (`converge`), so that the table and the preset cannot drift apart."""
    params = _searched_params("search-ml50k", "2")
    assert len(params) == 16
    assert load_config("ml50k-tuned") == load_config("converge", params)


def test_qin_ml50k_tuned_is_the_searched_trial_it_says_on_the_search_s_base() -> None:
    """The QIN preset is trial 58 of docs/results/search-qin-ml50k/trials.csv applied to that
    search's base (`qin-cpu` with the early stopping the search set on the command line)."""
    params = _searched_params("search-qin-ml50k", "58")
    assert len(params) == 11
    searched = load_config("qin-cpu", [*params, "train.epochs=30", "train.patience=2"])
    assert load_config("qin-ml50k-tuned") == searched


def test_every_shipped_preset_loads_by_path_and_by_name() -> None:
    paths = sorted(CONFIGS.glob("*.toml"))
    assert sorted(p.stem for p in paths) == preset_names()  # configs/ is the packaged folder
    assert {"paper", "cpu", "din", "release-small"} <= set(preset_names())
    for path in paths:
        assert load_config(path.stem) == load_config(path) == load_config(f"{path.stem}.toml")


def test_a_file_wins_over_a_preset_and_unknown_names_list_the_presets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpu.toml").write_text("[train]\nepochs = 2\n")
    assert load_config("cpu.toml").train.epochs == 2
    assert load_config("cpu").train.epochs == 4  # the shipped preset: no file named "cpu"
    listed = r"not found: papr \(a path, or a shipped preset: converge, cpu"
    with pytest.raises(ConfigError, match=listed):
        load_config("papr")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)


def test_diff_names_each_changed_key() -> None:
    a = load_config("cpu")
    b = a.with_overrides(["train.lr=0.01", "model.target_transformer.first_k=2"])
    assert a.diff(b) == ["model.target_transformer.first_k: 4 -> 2", "train.lr: 0.001 -> 0.01"]
    assert a.diff(a) == []


def test_overrides_are_parsed_by_field_type() -> None:
    cfg = Config().with_overrides(
        [
            "train.lr=1e-3",
            "train.epochs=3",
            "model.target_transformer.use_sequence=false",
            "model.target_transformer.deep_mlp=[64, 32]",
            "model.target_transformer.mask=released",
            "data.context_cols=a,b",
            "data.context_vocab_sizes=3,4",
        ]
    )
    assert cfg.train.lr == 1e-3 and cfg.train.epochs == 3
    s = cfg.model.section(TargetTransformerConfig)
    assert s.use_sequence is False and s.deep_mlp == (64, 32)
    assert s.mask == "released"
    assert cfg.data.context_cols == ("a", "b") and cfg.data.context_vocab_sizes == (3, 4)
    assert Config().with_overrides(["data.context_cols="]).data.context_cols == ()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr", "expected section.key=value"),
        ("nope.lr=1", "unknown section 'nope'"),
        ("train.learning_rate=1", "unknown key train.learning_rate"),
        ("train.epochs=three", "not a valid int"),
        ("model.target_transformer.use_cross=maybe", "not a valid bool"),
        ("model.target_transformer.mask=inverted", "model.target_transformer.mask"),
        ("model.target_transformer.first_k=200", "first_k (200) cannot exceed model.max_len (100)"),
        ("train.lr=-1", "train.lr must be > 0"),
    ],
)
def test_bad_overrides_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Config().with_overrides([override])


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nid_dim = 'wide'\n")
    with pytest.raises(ConfigError, match=r"model.id_dim = 'wide' is not a valid int"):
        load_config(bad)
    bad.write_text("[model]\nwidth = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key model\.width"):
        load_config(bad)
    bad.write_text("[optim]\nlr = 3\n")
    with pytest.raises(ConfigError, match=r"unknown section \[optim\]"):
        load_config(bad)
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_round_trip_through_dict() -> None:
    cfg = load_config(CONFIGS / "cpu.toml", ["model.target_transformer.mask=released"])
    assert Config.from_dict(cfg.to_dict()) == cfg
