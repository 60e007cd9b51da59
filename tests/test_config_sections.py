"""Config sections per model kind: [model] shared, [model.beyond], [model.<kind>]; the flat
keys of mmctr 0.1 move silently in saved runs and get a hint in new files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmctr.cli.main import main
from mmctr.config import Config, load_config
from mmctr.config.moved import MOVED
from mmctr.errors import ConfigError

DOCS_RUNS = Path(__file__).resolve().parents[1] / "docs" / "results"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_each_kind_reads_its_own_section(tmp_path: Path) -> None:
    text = (
        '[model]\nkind = "din"\nmax_len = 8\n[model.din]\nmlp = [16]\n[model.beyond]\nsid_dim = 4\n'
    )
    config = load_config(_write(tmp_path, text))
    assert config.model.kind == "din" and config.model.kind_section.mlp == (16,)
    assert config.model.beyond.sid_dim == 4
    raw = config.to_dict()["model"]
    assert set(raw) >= {"kind", "max_len", "beyond", "din"} and "target_transformer" not in raw
    assert Config.from_dict(config.to_dict()) == config  # the saved form reads back equal


def test_seed_is_an_alias_of_the_target_transformer(tmp_path: Path) -> None:
    text = '[model]\nkind = "seed"\n[model.seed]\nfirst_k = 2\n'
    config = load_config(_write(tmp_path, text))
    assert config.model.kind == "target_transformer"
    assert config.model.kind_section.first_k == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[model]\nfirst_k = 2\n", r"model.first_k has moved: .*\[model.target_transformer\]"),
        (
            "[model]\ndin_mlp = [8]\n",
            r"model.din_mlp has moved: write it as mlp under \[model.din\]",
        ),
        ("[model]\nsemantic_ids = true\n", r"semantic_ids under \[model.beyond\]"),
        ("[model]\ntrim_padding = false\n", "no longer a config key"),
        ("[model.din]\nmlp = [8]\n", r"\[model.din\] holds the keys of model.kind = 'din'"),
        ("[model.target_transformer]\nwidth = 3\n", "unknown key model.target_transformer.width"),
        ('[model]\nkind = "nope"\n', "model.kind must be one of .*din.*qin.*target_transformer"),
        ("[model.beyond]\nsid_codes = 1\n", r"model.beyond.sid_codes must be >= 2"),
        ("[model.target_transformer]\nmask = 'no'\n", "mask = 'no' is not a valid choice"),
        ("[model.target_transformer]\nseq_dropout = nan\n", "must be a finite number"),
    ],
)
def test_a_bad_or_old_key_in_a_new_file_is_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, text))


def test_set_uses_the_sections_and_hints_old_keys() -> None:
    config = load_config("cpu", ["model.target_transformer.first_k=2", "model.beyond.sid_dim=3"])
    assert (config.model.kind_section.first_k, config.model.beyond.sid_dim) == (2, 3)
    assert load_config("cpu").diff(config) == [
        "model.beyond.sid_dim: 16 -> 3",
        "model.target_transformer.first_k: 4 -> 2",
    ]
    with pytest.raises(ConfigError, match=r"--set model\.target_transformer\.first_k=\.\.\."):
        load_config("cpu", ["model.first_k=2"])
    with pytest.raises(ConfigError, match=r"model\.beyond and model\.target_transformer"):
        load_config("cpu", ["model.din.mlp=8"])


def test_the_cli_exits_2_with_the_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["describe", "--config", "cpu", "--data", str(tmp_path), "--set", "model.first_k=2"]
    assert main(args) == 2
    assert "model.first_k has moved" in capsys.readouterr().err


def test_an_old_flat_saved_config_moves_to_the_sections() -> None:
    saved = {"kind": "seed", "first_k": 2, "din_mlp": [8], "sid_dim": 4, "trim_padding": False}
    config = Config.from_saved({"model": saved}, source="old config.json")
    assert config.model.kind == "target_transformer"
    assert (config.model.kind_section.first_k, config.model.beyond.sid_dim) == (2, 4)
    din = Config.from_saved({"model": {"kind": "din", "din_mlp": [8], "first_k": 9}}, source="o")
    assert din.model.kind_section.mlp == (8,)  # the other kind's old keys are dropped


OTHER_CHOICE = {"mask": "released", "id_init": "mm"}


def _not_default(name: str, value: object) -> object:
    """A valid value of a key other than its default, so that a dropped key shows."""
    if name in OTHER_CHOICE:
        return OTHER_CHOICE[name]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 if name != "first_k" else 2
    if isinstance(value, float):
        return 0.05
    return [7]


@pytest.mark.parametrize("key", sorted(MOVED))
def test_every_old_key_moves_to_where_its_hint_says(key: str) -> None:
    section, name = MOVED[key]
    kind = "din" if section == "din" else "target_transformer"
    model = Config.from_dict({"model": {"kind": kind}}).model
    value = _not_default(
        name, getattr(model.beyond if section == "beyond" else model.kind_section, name)
    )
    moved = Config.from_saved({"model": {"kind": kind, key: value}}, source="old").to_dict()
    assert moved["model"][section][name] == value


def test_every_config_json_kept_in_docs_results_loads() -> None:
    """The run folders kept under docs/results were written by mmctr 0.1 (flat keys)."""
    files = sorted(DOCS_RUNS.rglob("config.json"))
    if not files:
        pytest.skip("no run folders kept under docs/results")
    for path in files:
        config = Config.from_saved(json.loads(path.read_text()), source=str(path))
        assert Config.from_dict(config.to_dict()) == config, path


def test_an_experiment_kept_from_mmctr_0_1_resumes_with_the_same_configs(tmp_path: Path) -> None:
    """docs/results/beyond-ml50k was run with flat keys; its plan, built today, must find every
    kept run's config equal to its job's (else resuming it would be refused)."""
    from mmctr.experiments.plan import ablation_plan
    from mmctr.experiments.runner import check_runs

    kept = DOCS_RUNS / "beyond-ml50k" / "runs"
    if not kept.is_dir():
        pytest.skip("docs/results/beyond-ml50k is not in this checkout")
    for config in kept.glob("*/config.json"):
        if not config.parent.name.startswith("din-"):  # DIN ran with its own --din-set
            (tmp_path / "runs" / config.parent.name).mkdir(parents=True)
            (tmp_path / "runs" / config.parent.name / "config.json").write_text(config.read_text())
    variants = "full,similarity,semantic-ids,mm-id-init,positions,beyond-all,no-multimodal"
    plan = ablation_plan(load_config("converge"), None, seeds=3, variants=variants.split(","))
    check_runs(plan, tmp_path, None)
    assert len(list((tmp_path / "runs").iterdir())) >= 7


def test_set_may_change_the_kind_and_then_sets_its_keys() -> None:
    config = load_config("cpu", ["model.kind=din", "model.din.mlp=8"])
    assert config.model.kind == "din" and config.model.kind_section.mlp == (8,)
    assert config.model.max_len == 20  # the shared keys stay the preset's
    with pytest.raises(ConfigError, match=r"\[model.target_transformer\] holds the keys"):
        load_config("cpu", ["model.target_transformer.first_k=2", "model.kind=din"])
