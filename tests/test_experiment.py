"""`mmctr experiment`: plans, the tables, resume after an interruption, failures, sweeps."""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing as mp
import os
import signal
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from mmctr.cli import experiment as experiment_cli
from mmctr.cli.main import main
from mmctr.config import Config, load_config
from mmctr.errors import ConfigError
from mmctr.experiments import ablation_plan, run_experiment, sweep_plan
from mmctr.experiments import runner as runner_module
from mmctr.experiments.experiment import report
from mmctr.experiments.plan import Plan
from mmctr.experiments.report import markdown, summarise
from mmctr.experiments.rows import BUCKET_COLUMNS, COLUMNS, METRIC_COLUMNS, RunRow
from mmctr.experiments.runner import eta_seconds, format_duration
from mmctr.logs import to_terminal
from mmctr.model import TargetTransformerConfig
from mmctr.training import epoch as epochs
from mmctr.training import run as runs
from mmctr.training.summary import RunSummary

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TINY_DIN = [
    "model.id_dim=8",
    "model.tag_dim=8",
    "model.mm_dim=8",
    "model.context_dim=4",
    "model.max_len=12",
    "model.din.attention_mlp=16",
    "model.din.mlp=16",
    "train.batch_size=256",
]


def cli(*args: str | Path) -> int:
    """Run `mmctr experiment ...` through the subcommand's own parser, its progress lines
    printed as `main` prints them."""
    parser = argparse.ArgumentParser(prog="mmctr")
    experiment_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    parsed = parser.parse_args([str(a) for a in args])
    with to_terminal():
        code: int = parsed.func(parsed)
    return code


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def quiet(_: str) -> None:
    pass


def test_ablation_end_to_end(
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "exp"
    din_sets = [a for s in TINY_DIN for a in ("--din-set", s)]
    code = cli(
        "experiment", "ablation", "--data", tiny_data_master, "--config", tiny_config_file,
        "--out", out, "--variants", "full,din,beyond-all", *din_sets,
    )  # fmt: skip
    assert code == 0
    rows = read_csv(out / "results.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["variant"], r["seed"], r["status"]) for r in rows] == [
        ("full", "7", "done"),
        ("din", "7", "done"),
        ("beyond-all", "7", "done"),
    ]
    for row in rows:
        assert 0.0 < float(row["valid_auc"]) < 1.0 and 0.0 < float(row["test_auc"]) < 1.0
        assert int(row["parameters"]) > 0 and int(row["epochs"]) == 2 and not row["error"]
        assert row["stopped_early"] == "False" and int(row["best_epoch"]) in (1, 2)
        buckets = [row[c] for c in BUCKET_COLUMNS.values() if row[c]]
        assert len(buckets) >= 2 and all(0.0 <= float(b) <= 1.0 for b in buckets)
        test_rows = sum(int(n) for n in row["test_bucket_rows"].split("/"))
        assert test_rows == pq.read_metadata(tiny_data_master / "test.parquet").num_rows
    beyond = json.loads((out / "runs" / "beyond-all-seed0" / "config.json").read_text())
    assert beyond["model"]["beyond"]["semantic_ids"]
    assert beyond["model"]["target_transformer"]["positions"]
    din_config = json.loads((out / "runs" / "din-seed0" / "config.json").read_text())
    assert din_config["model"]["kind"] == "din"
    assert din_config["train"]["epochs"] == 2 and din_config["train"]["seed"] == 7
    assert din_config["train"]["lr"] == 1e-3  # the DIN recipe, not the seed model's
    table = (out / "results.md").read_text().splitlines()
    body = [line for line in table if line.startswith("| `")]
    text = "\n".join(table)
    assert "## Cold start" in table and "unseen AUC (" in text and "| `beyond-all` |" in text
    body = body[:3]  # the main table's rows; the cold-start table follows
    assert len(body) == 3 and all(line.count("|") == len(table[4].split("|")) - 1 for line in body)
    assert "test AUC" in table[4]
    assert (out / "ablation.png").read_bytes().startswith(PNG_MAGIC)
    assert "[2/3] din-seed0" in (out / "experiment.log").read_text()
    assert "[1/3] full-seed0: training" in capsys.readouterr().out


def test_resume_reruns_nothing_that_finished(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = ablation_plan(tiny_config, None, variants=["full", "no-transformer"])
    real_epoch, calls = epochs.train_epoch, {"n": 0}

    def killed_in_the_second_runs_second_epoch(*args: Any) -> float:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(epochs, "train_epoch", killed_in_the_second_runs_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(plan, tiny_data_master, tmp_path, log=quiet)
    monkeypatch.setattr(epochs, "train_epoch", real_epoch)
    assert [r["run"] for r in read_csv(tmp_path / "results.csv")] == ["full-seed0"]

    real_fit, fits = runs.fit, []

    def counting_fit(*args: Any, **kwargs: Any) -> RunSummary:
        fits.append((args[3].root, kwargs["resume"]))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(runs, "fit", counting_fit)
    lines: list[str] = []
    result = run_experiment(plan, tiny_data_master, tmp_path, log=lines.append)
    assert fits == [(tmp_path / "runs" / "no-transformer-seed0", True)]
    assert [r.status for r in result.rows] == ["done", "done"]
    assert "[1/2] full-seed0: finished earlier, read back" in lines
    assert "[2/2] no-transformer-seed0: resuming from its checkpoint; about" in lines[3]
    metrics = (tmp_path / "runs" / "no-transformer-seed0" / "metrics.jsonl").read_text()
    assert len(metrics.splitlines()) == 2
    fits.clear()
    run_experiment(plan, tiny_data_master, tmp_path, log=quiet)
    assert fits == []


def test_a_failed_run_is_recorded_and_the_others_finish(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_build = runs.build_model

    def broken_without_transformer(cfg: Any, dims: Any) -> Any:
        if not cfg.section(TargetTransformerConfig).use_sequence:
            raise RuntimeError("simulated crash\nsecond line")
        return real_build(cfg, dims)

    monkeypatch.setattr(runs, "build_model", broken_without_transformer)
    out = tmp_path / "exp"
    args = ["experiment", "ablation", "--data", tiny_data_master, "--config", tiny_config_file]
    args += ["--out", out, "--variants", "no-transformer,full", "--quick"]
    assert cli(*args) == 1
    rows = read_csv(out / "results.csv")
    assert [(r["variant"], r["status"]) for r in rows] == [
        ("no-transformer", "failed"),
        ("full", "done"),
    ]
    assert rows[0]["error"] == "RuntimeError: simulated crash second line"
    assert "simulated crash" in (out / "runs" / "no-transformer-seed0" / "error.log").read_text()
    assert "(1 failed)" in (out / "results.md").read_text()
    assert (out / "ablation.png").exists()
    monkeypatch.setattr(runs, "build_model", real_build)
    assert cli(*args) == 0  # the failed run is retried, the finished one read back
    assert not (out / "runs" / "no-transformer-seed0" / "error.log").exists()


def test_sweep_of_two_values_and_bad_values_up_front(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sweep"
    args = ["experiment", "sweep", "--data", tiny_data_master, "--config", tiny_config_file]
    param = "model.target_transformer.first_k"
    with pytest.raises(ConfigError, match=rf"{param}=13 cannot run .*cannot exceed"):
        cli(*args, "--out", out, "--param", param, "--values", "2,13")
    assert not out.exists(), "nothing may run before every value is checked"
    with pytest.raises(ConfigError, match=r"unknown key model\.nope"):
        cli(*args, "--out", out, "--param", "model.nope", "--values", "1")
    code = cli(*args, "--out", out, "--param", param, "--values", "1,4", "--quick")
    assert code == 0
    rows = read_csv(out / "results.csv")
    assert [(r["variant"], r["value"], r["run"]) for r in rows] == [
        ("first_k=1", "1", "first_k=1-seed0"),
        ("first_k=4", "4", "first_k=4-seed0"),
    ]
    saved = json.loads((out / "runs" / "first_k=4-seed0" / "config.json").read_text())
    assert saved["model"]["target_transformer"]["first_k"] == 4 and saved["train"]["epochs"] == 1
    table = (out / "results.md").read_text()
    assert f"Sweep of `{param}`" in table and "in sweep order" in table
    assert (out / "sweep.png").read_bytes().startswith(PNG_MAGIC)


def test_test_split_without_labels_leaves_its_columns_empty(
    tiny_data: Path, tiny_config: Config, tmp_path: Path
) -> None:
    table = pq.read_table(tiny_data / "test.parquet")
    pq.write_table(table.drop(["label"]), tiny_data / "test.parquet")
    plan = ablation_plan(tiny_config, None, variants=["no-transformer"], quick=True)
    result = run_experiment(plan, tiny_data, tmp_path, log=quiet)
    row = read_csv(tmp_path / "results.csv")[0]
    assert row["status"] == "done" and row["valid_auc"] and row["test_auc"] == ""
    assert "test AUC" not in (tmp_path / "results.md").read_text()
    assert "Cold start" not in (tmp_path / "results.md").read_text()
    assert result.figure is not None and result.figure.exists()


def test_plans_seeds_din_settings_and_errors(tiny_config: Config) -> None:
    din = load_config(CONFIGS / "din.toml")
    plan = ablation_plan(tiny_config, din, seeds=2, variants=["din-no-mm", "raw-mm"], quick=True)
    assert [j.name for j in plan.jobs] == [
        "din-no-mm-seed0",
        "din-no-mm-seed1",
        "raw-mm-seed0",
        "raw-mm-seed1",
    ]
    first = plan.jobs[0].config
    assert first.model.kind == "din" and not first.model.use_multimodal
    assert first.data == tiny_config.data and first.train.batch_size == 8192
    assert [j.config.train.seed for j in plan.jobs] == [7, 8, 7, 8]
    assert all(j.config.train.epochs == 1 for j in plan.jobs)  # --quick
    assert plan.jobs[2].config.model.mm_projection == "none"
    assert len(ablation_plan(tiny_config, din).jobs) == 10  # the paper's rows, not BEYOND's
    beyond = ablation_plan(tiny_config, None, variants=["semantic-ids", "mm-id-init"])
    first_beyond = beyond.jobs[0].config.model
    assert first_beyond.beyond.semantic_ids
    assert not first_beyond.section(TargetTransformerConfig).positions
    assert beyond.jobs[1].config.model.beyond.id_init == "mm"
    with pytest.raises(ConfigError, match="unknown variant 'nope'"):
        ablation_plan(tiny_config, din, variants=["nope"])
    with pytest.raises(ConfigError, match="need --din-config"):
        ablation_plan(tiny_config, None, variants=["din"])
    with pytest.raises(ConfigError, match="--seeds must be >= 1"):
        sweep_plan(tiny_config, "model.max_len", ["10"], seeds=0)
    with pytest.raises(ConfigError, match="twice"):
        sweep_plan(tiny_config, "model.max_len", ["10", "10"])


def test_resuming_with_another_config_is_refused_up_front(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path
) -> None:
    plan = ablation_plan(tiny_config, None, variants=["no-transformer"], quick=True)
    run_experiment(plan, tiny_data_master, tmp_path, log=quiet)
    other = ablation_plan(
        tiny_config.with_overrides(["train.lr=1e-2"]), None, variants=["no-transformer"]
    )
    with pytest.raises(ConfigError, match=r"another config \(.*train.lr: 0.003 -> 0.01"):
        run_experiment(other, tiny_data_master, tmp_path, log=quiet)


def test_report_reads_finished_runs_and_writes_nothing(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path
) -> None:
    run_experiment(
        ablation_plan(tiny_config, None, variants=["no-transformer"], quick=True),
        tiny_data_master,
        tmp_path,
        log=quiet,
    )
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    wider = ablation_plan(tiny_config, None, seeds=2, variants=["no-transformer"], quick=True)
    text = report(wider, tmp_path)
    row = read_csv(tmp_path / "results.csv")[0]
    assert f"| `no-transformer` | 1 | {float(row['valid_auc']):.4f} |" in text
    assert text.endswith("Not finished yet (1 of 2): no-transformer-seed1\n")
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    other = ablation_plan(
        tiny_config.with_overrides(["train.lr=1e-2"]), None, variants=["no-transformer"]
    )
    with pytest.raises(ConfigError, match="another config"):
        report(other, tmp_path)
    args = ["ablation", "--data", tiny_data_master, "--config", CONFIGS / "cpu.toml"]
    with pytest.raises(ConfigError, match="no runs folder"):
        cli("experiment", *args, "--out", tmp_path / "nothing", "--report")
    assert not (tmp_path / "nothing").exists()


def test_summary_is_mean_and_sample_std_sorted_by_valid_auc() -> None:
    plan = Plan("ablation", (), {"a": "variant a", "b": "variant b"})
    rows = [RunRow("a", "", 1, f"a-seed{k}", "done", valid_auc=v) for k, v in enumerate((0.7, 0.8))]
    rows.append(RunRow("b", "", 1, "b-seed0", "done", valid_auc=0.9))
    rows.append(RunRow("b", "", 1, "b-seed1", "failed", valid_auc=None))
    summaries = summarise(plan, rows)
    assert [(s.variant, s.runs, s.failed) for s in summaries] == [("b", 1, 1), ("a", 2, 0)]
    assert summaries[1].mean["valid_auc"] == pytest.approx(0.75)
    assert summaries[1].std["valid_auc"] == pytest.approx(0.0707107, rel=1e-5)
    text = markdown(plan, summaries)
    assert "| `a` | 2 | 0.7500 ± 0.0707 |" in text and "| `b` | 1 (1 failed) | 0.9000 |" in text
    sweep = Plan("sweep", (), {"a": "k=1", "b": "k=2"}, param="model.first_k")
    assert [s.variant for s in summarise(sweep, rows)] == ["a", "b"]  # value order, not AUC


def test_time_left_comes_from_finished_runs() -> None:
    assert eta_seconds([], ["a"]) is None
    done = [("a", 10.0), ("a", 20.0), ("b", 60.0)]
    assert eta_seconds(done, ["a", "b", "c"]) == pytest.approx(15 + 60 + 30)
    assert [format_duration(s) for s in (42, 125, 7260)] == ["42s", "2m05s", "2h01m"]


def test_parallel_jobs_give_the_serial_results_and_resume(
    tiny_data_master: Path, tiny_config: Config, tiny_config_file: Path, tmp_path: Path
) -> None:
    config = tiny_config.with_overrides(["train.num_threads=1"])  # same threads, same numbers
    plan = ablation_plan(config, None, variants=["full", "no-transformer", "no-dcn"], quick=True)
    serial = run_experiment(plan, tiny_data_master, tmp_path / "serial", log=quiet)
    lines: list[str] = []
    parallel = run_experiment(plan, tiny_data_master, tmp_path / "par", log=lines.append, jobs=2)
    assert [r.run for r in parallel.rows] == [j.name for j in plan.jobs]
    for a, b in zip(serial.rows, parallel.rows, strict=True):
        assert b.status == "done"
        assert [a.metric(c) for c in METRIC_COLUMNS] == [b.metric(c) for c in METRIC_COLUMNS]
    assert any(line.startswith("2 runs at a time") for line in lines)
    assert any(line.startswith("[3/3] no-dcn-seed0: valid auc") for line in lines)
    assert any(line.startswith("[2/3] no-transformer-seed0: epoch   1") for line in lines)
    assert [r["run"] for r in read_csv(tmp_path / "par" / "results.csv")] == [
        j.name for j in plan.jobs
    ]
    lines.clear()
    run_experiment(plan, tiny_data_master, tmp_path / "par", log=lines.append, jobs=2)
    assert sum("finished earlier, read back" in line for line in lines) == 3
    assert not any("runs at a time" in line for line in lines)  # nothing left to train
    with pytest.raises(ConfigError, match="--jobs must be >= 1"):
        cli("experiment", "ablation", "--data", tiny_data_master, "--config", tiny_config_file,
            "--out", tmp_path / "zero", "--jobs", "0")  # fmt: skip
    assert not (tmp_path / "zero").exists()


def test_sigterm_ends_a_parallel_experiment_and_its_workers_and_it_resumes(
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_started = runner_module.Progress.started

    def started_then_killed(self: runner_module.Progress, i: int, action: str) -> None:
        real_started(self, i, action)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runner_module.Progress, "started", started_then_killed)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "exp"
    args = ["experiment", "ablation", "--data", tiny_data_master, "--config", tiny_config_file]
    args += ["--out", out, "--variants", "full,no-transformer", "--quick", "--jobs", "2"]
    assert main([str(a) for a in args]) == 1
    assert "mmctr: interrupted" in capsys.readouterr().err
    assert not list(out.glob("runs/*/result.json")), "the workers were to stop mid-run"
    assert signal.getsignal(signal.SIGTERM) == before
    for _ in range(100):  # terminated workers are reaped within moments
        if not mp.active_children():
            break
        time.sleep(0.1)
    assert mp.active_children() == []
    monkeypatch.setattr(runner_module.Progress, "started", real_started)
    assert main([str(a) for a in args]) == 0
    assert [r["status"] for r in read_csv(out / "results.csv")] == ["done", "done"]
