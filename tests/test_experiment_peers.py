"""`mmctr experiment peers`: the 1st place, QIN and DIN with and without item features on the
same data, and the ensemble of the two best; each run sees only its own item columns."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from mmctr.cli.main import main
from mmctr.config import Config, load_config
from mmctr.data import load_dataset
from mmctr.errors import ConfigError
from mmctr.experiments import ensemble_rows
from mmctr.experiments.peers import peers_plan
from mmctr.experiments.shared_data import union_data_config
from mmctr.training import run as runs
from mmctr.training.summary import RunSummary

SMALL = ["model.id_dim=8", "model.tag_dim=8", "model.mm_dim=8", "model.context_dim=4",
         "model.max_len=12", "train.batch_size=256", "train.eval_batch_size=512"]  # fmt: skip
TINY_QIN = [*SMALL, "model.qin.num_layers=2"]
TINY_DIN = [*SMALL, "model.din.attention_mlp=16", "model.din.mlp=16"]
SINGLES = ["target-transformer", "target-transformer+items", "qin", "qin+items", "din"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def peers_args(data: Path, config: Path, out: Path, *extra: str) -> list[str]:
    sets = [a for s in TINY_QIN for a in ("--qin-set", s)]
    sets += [a for s in TINY_DIN for a in ("--din-set", s)]
    return ["experiment", "peers", "--data", str(data), "--config", str(config), "--out",
            str(out), "--quick", *sets, *extra]  # fmt: skip


def test_plan_builds_qin_and_din_from_their_presets_and_items_differ_in_one_key(
    tiny_config: Config,
) -> None:
    qin, din = load_config("qin-cpu"), load_config("din")
    plan = peers_plan(tiny_config, qin, din, item_cols=["likes_level"], seeds=2, quick=True)
    assert list(plan.descriptions) == [*SINGLES, "ensemble"] and plan.ensemble_seeds == 2
    assert [j.name for j in plan.jobs[:3]] == [
        "target-transformer-seed0", "target-transformer-seed1", "target-transformer+items-seed0",
    ]  # fmt: skip
    by = {j.name: j.config for j in plan.jobs}
    base, items = by["target-transformer-seed0"], by["target-transformer+items-seed0"]
    assert base.data == tiny_config.data and base.train.epochs == 1  # --quick
    assert items.data.item_feature_cols == ("likes_level",)
    assert items.model == base.model and items.train == base.train
    q, qi = by["qin-seed1"], by["qin+items-seed1"]
    assert q.model == qin.model and q.data == tiny_config.data
    assert q.train.lr == qin.train.lr and q.train.batch_size == qin.train.batch_size
    assert (q.train.patience, q.train.seed) == (tiny_config.train.patience, 8)
    assert qi.model == q.model and qi.train == q.train and qi.data == items.data
    assert by["din-seed0"].model == din.model and by["din-seed0"].data == tiny_config.data
    with pytest.raises(ConfigError, match="--item-cols is empty"):
        peers_plan(tiny_config, qin, din, item_cols=[" "])
    with pytest.raises(ConfigError, match="--seeds must be >= 1"):
        peers_plan(tiny_config, qin, din, seeds=0)
    with pytest.raises(ConfigError, match=r"--qin-config must describe model\.kind = 'qin'"):
        peers_plan(tiny_config, din, din)
    with pytest.raises(ConfigError, match=r"may differ only in data\.item_feature_cols"):
        union_data_config([base.data, base.with_overrides(["data.label_col=y"]).data])


def test_peers_end_to_end_ensemble_evaluate_and_resume(
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "peers"
    assert main(peers_args(tiny_data_master, tiny_config_file, out, "--jobs", "2")) == 0
    rows = read_csv(out / "results.csv")
    assert [r["variant"] for r in rows] == [*SINGLES, "ensemble"]
    assert all(r["status"] == "done" for r in rows)
    for row in rows[:-1]:
        assert float(row["train_samples_per_s"]) > 0 and int(row["epochs"]) == 1
        assert float(row["peak_rss_gb"]) > 0 or not sys.platform.startswith("linux")
    ens = rows[-1]
    assert 0.0 < float(ens["test_auc"]) < 1.0 and ens["run"] == "ensemble-seed0"
    members = [m.split(":") for m in ens["members"].split(",")]
    weights = [float(w) for _, w in members]
    assert len(members) == 2 and all(w >= 0 for w in weights)
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    by_valid = sorted(rows[:-1], key=lambda r: -float(r["valid_auc"]))
    assert [name for name, _ in members] == [r["run"] for r in by_valid[:2]]
    text = (out / "results.md").read_text()
    assert "# Peers on the same data" in text and "## Ensemble members" in text
    assert f"- `ensemble-seed0`: {members[0][0]}:" in text and "train samples/s" in text
    assert "peak RSS GB" in text or not sys.platform.startswith("linux")
    _each_run_saves_the_schema_of_its_own_config(tiny_data_master, out)
    # `mmctr evaluate` on a +items run gives the AUC the experiment recorded
    capsys.readouterr()
    run = out / "runs" / "target-transformer+items-seed0"
    assert (
        main(
            [
                "evaluate",
                "--run",
                str(run),
                "--data",
                str(tiny_data_master),
                "--split",
                "valid",
                "--json",
            ]
        )
        == 0
    )
    recorded = next(r for r in rows if r["run"] == run.name)
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["auc"] == pytest.approx(float(recorded["valid_auc"]), abs=1e-6)

    # a rerun trains nothing and combines nothing again
    def no_training(*args: Any, **kwargs: Any) -> RunSummary:
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(runs, "fit", no_training)
    monkeypatch.setattr(ensemble_rows, "load_run", no_training)
    assert main(peers_args(tiny_data_master, tiny_config_file, out)) == 0
    assert read_csv(out / "results.csv") == rows
    capsys.readouterr()
    assert main([*peers_args(tiny_data_master, tiny_config_file, out), "--report"]) == 0
    assert "| `ensemble` | 1 |" in capsys.readouterr().out


def _each_run_saves_the_schema_of_its_own_config(data: Path, out: Path) -> None:
    for name in ("target-transformer-seed0", "target-transformer+items-seed0", "qin+items-seed0"):
        run = out / "runs" / name
        config = Config.from_saved(json.loads((run / "config.json").read_text()), source=name)
        alone = load_dataset(data, config.data, ("train", "valid", "test")).schema
        saved = torch.load(run / "model.pt", map_location="cpu", weights_only=True)["schema"]
        assert saved == alone.to_dict(), name
        assert ("item_feature_cols" in saved) == name.endswith("+items-seed0")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--item-cols", "likes_level,no_such_col"], "missing column 'no_such_col'"),
        (["--item-cols", ","], "--item-cols is empty"),
        (["--seeds", "0"], "--seeds must be >= 1"),
    ],
)
def test_bad_flags_exit_2_with_a_message(
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    message: str,
) -> None:
    args = peers_args(tiny_data_master, tiny_config_file, tmp_path / "bad", *extra)
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "bad" / "runs").exists()


def test_peers_with_held_out_items_marks_them_in_every_member(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "cold"
    args = peers_args(tiny_data_master, tiny_config_file, out, "--held-out-items", "0.2")
    assert main(args) == 0
    rows = read_csv(out / "results.csv")
    assert [r["status"] for r in rows] == ["done"] * 6 and rows[-1]["variant"] == "ensemble"
    assert all(r["test_auc_unseen"] for r in rows)
    assert "were held out of training" in (out / "results.md").read_text()
