"""The mmctr command line end to end, and its exit codes and messages on bad input."""

from __future__ import annotations

import csv
import io
import json
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from mmctr.cli.main import main
from mmctr.prepare import synth

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def trained_run(
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> Path:
    run_dir = tmp_path / "run"
    code, out, _ = run(
        capsys,
        "train",
        "--data",
        tiny_data_master,
        "--config",
        tiny_config_file,
        "--out",
        run_dir,
        "--set",
        "train.epochs=1",
        "--no-progress",
    )
    assert code == 0 and "done: best epoch 1" in out
    return run_dir


def test_synth_and_refusal_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "tiny"
    code, out, _ = run(capsys, "synth", out_dir, "--preset", "tiny", "--seed", "1")
    assert code == 0 and "wrote tiny data set" in out
    assert pq.read_metadata(out_dir / "train.parquet").num_rows == 3000
    code, _, err = run(capsys, "synth", out_dir, "--preset", "tiny")
    assert code == 2 and "train.parquet already exists" in err
    assert run(capsys, "synth", out_dir, "--preset", "tiny", "--force")[0] == 0


def test_evaluate_predict_describe(
    trained_run: Path, tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "evaluate", "--run", trained_run, "--data", tiny_data_master, "--json"
    )
    metrics = json.loads(out)
    assert code == 0 and {"auc", "logloss", "gauc"} <= set(metrics) and metrics["split"] == "valid"
    summary = json.loads((trained_run / "summary.json").read_text())
    assert metrics["auc"] == pytest.approx(summary["best_valid"]["auc"], rel=1e-6)
    code, out, _ = run(
        capsys, "evaluate", "--run", trained_run, "--data", tiny_data_master, "--split", "test"
    )
    assert code == 0 and out.startswith("test: auc ")

    sub = tmp_path / "submission.zip"
    code, out, _ = run(
        capsys,
        "predict",
        "--run",
        trained_run,
        "--data",
        tiny_data_master,
        "--out",
        sub,
        "--no-progress",
    )
    assert code == 0
    with zipfile.ZipFile(sub) as zf:
        assert zf.namelist() == ["prediction.csv"]
        rows = list(csv.reader(io.StringIO(zf.read("prediction.csv").decode())))
    assert rows[0] == ["ID", "Task2"]
    assert [int(r[0]) for r in rows[1:]] == list(range(500))
    assert all(0.0 < float(r[1]) < 1.0 for r in rows[1:])

    code, out, _ = run(
        capsys, "describe", "--config", CONFIGS / "cpu.toml", "--data", tiny_data_master, "--json"
    )
    described = json.loads(out)
    assert code == 0 and described["macs_per_sample"] > 0
    assert described["parameters"]["total"] == sum(
        v for k, v in described["parameters"].items() if k != "total"
    )
    code, out, _ = run(
        capsys, "describe", "--config", CONFIGS / "cpu.toml", "--data", tiny_data_master
    )
    assert code == 0 and "cross" in out and "total" in out


def test_resume_of_a_finished_run_does_nothing(
    trained_run: Path, tiny_data_master: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (trained_run / "model.pt").stat().st_mtime_ns
    code, out, _ = run(
        capsys, "train", "--data", tiny_data_master, "--out", trained_run, "--resume"
    )
    assert code == 0 and "already finished" in out
    assert (trained_run / "model.pt").stat().st_mtime_ns == before
    code, _, err = run(
        capsys,
        "train",
        "--data",
        tiny_data_master,
        "--config",
        CONFIGS / "cpu.toml",
        "--out",
        trained_run,
    )
    assert code == 2 and "already holds a run; pass --resume" in err


def test_model_on_data_of_another_schema(
    trained_run: Path, tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    synth.generate(other, replace(synth.PRESETS["tiny"], num_items=400), progress=False)
    code, _, err = run(capsys, "evaluate", "--run", trained_run, "--data", other)
    assert code == 2 and "does not match the one the model was trained on" in err
    assert "num_items: model 300 vs data 400" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["train", "--data", "{data}", "--config", "{missing}", "--out", "{tmp}/r"],
            "config file not found",
        ),
        (
            ["train", "--data", "{tmp}/nodata", "--config", "{cpu}", "--out", "{tmp}/r"],
            "data directory not found",
        ),
        (
            [
                "train",
                "--data",
                "{data}",
                "--config",
                "{cpu}",
                "--out",
                "{tmp}/r",
                "--set",
                "model.target_transformer.first_k=0",
            ],
            "model.target_transformer.first_k must be >= 1",
        ),
        (["train", "--data", "{data}", "--out", "{tmp}/r"], "--config is required"),
        (["evaluate", "--run", "{tmp}/norun", "--data", "{data}"], "run directory not found"),
        (["evaluate", "--run", "{tmp}", "--data", "{data}"], "holds no trained model"),
        (
            ["predict", "--run", "{tmp}", "--data", "{data}", "--out", "{tmp}/p.csv"],
            "must be a .zip file",
        ),
        (
            ["describe", "--config", "{cpu}", "--data", "{data}", "--set", "train.bogus=1"],
            "unknown key train.bogus",
        ),
    ],
)
def test_bad_input_exits_2_with_a_message(
    args: list[str],
    message: str,
    tiny_data_master: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    subs = {
        "data": tiny_data_master,
        "tmp": tmp_path,
        "cpu": CONFIGS / "cpu.toml",
        "missing": tmp_path / "missing.toml",
    }
    code, _, err = run(capsys, *[a.format(**subs) for a in args])
    assert code == 2 and message in err
    assert not (tmp_path / "r").exists(), "a failed train leaves no run directory"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train"], "the following arguments are required"),
        (["synth", "out", "--preset", "huge"], "invalid choice: 'huge'"),
        (["evaluate", "--run", "r", "--data", "d", "--split", "dev"], "invalid choice: 'dev'"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(args)
    assert caught.value.code == 2
    assert message in capsys.readouterr().err


def test_bench_reports_speed_and_memory(
    tiny_data_master: Path, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "--config", tiny_config_file, "--data", tiny_data_master, "--batches", "2"]
    code, out, _ = run(capsys, *args, "--baseline", "--json")
    figures = json.loads(out)
    assert code == 0
    for key in (
        "train_samples_per_s",
        "inference_samples_per_s",
        "load_seconds",
        "peak_rss_gb",
        "matmul_gflops",
        "mfu",
        "train_speedup",
        "inference_speedup",
    ):
        assert figures[key] > 0, key
    assert figures["useful_macs_per_sample"] < figures["full_length_macs_per_sample"]
    assert figures["baseline"]["useful_macs_per_sample"] == figures["useful_macs_per_sample"]
    code, out, _ = run(capsys, *args)
    assert code == 0 and "train_samples_per_s" in out and "baseline" not in out


def test_bench_times_long_histories_alone_when_asked(
    tiny_data_master: Path, tiny_config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["bench", "--config", tiny_config_file, "--data", tiny_data_master, "--batches", "1"]
    code, out, _ = run(capsys, *args, "--json")
    every = json.loads(out)
    code_long, out, _ = run(capsys, *args, "--json", "--min-history", "8")
    long = json.loads(out)
    assert code == code_long == 0
    assert long["min_history"] == 8 and 0 < long["timed_from_rows"] < every["timed_from_rows"]
    assert long["useful_macs_per_sample"] > every["useful_macs_per_sample"]
    code, _, err = run(capsys, *args, "--min-history", "100000")
    assert code == 2 and "--min-history 100000: no train row has that many" in err
    code, _, err = run(capsys, *args, "--min-history", "-1")
    assert code == 2 and "--min-history must be >= 0" in err
    code, _, err = run(capsys, *args, "--warmup", "-1")
    assert code == 2 and "--warmup must be >= 0" in err
    code, out, _ = run(capsys, *args, "--json", "--warmup", "0")
    assert code == 0 and json.loads(out)["warmup_batches"] == 0


def test_train_writes_tensorboard_curves(
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    accumulator = pytest.importorskip(
        "tensorboard.backend.event_processing.event_accumulator",
        reason="the tensorboard extra is not installed",
    )
    logs = tmp_path / "tb"
    code, _, _ = run(capsys, "train", "--data", tiny_data_master, "--config", tiny_config_file,
                     "--out", tmp_path / "run", "--set", "train.epochs=2", "--set",
                     "train.patience=2", "--no-progress", "--tensorboard", logs)  # fmt: skip
    assert code == 0
    events = accumulator.EventAccumulator(str(logs))
    events.Reload()
    history = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(h["peak_rss_gb"] > 0 for h in history) or not sys.platform.startswith("linux")
    steps = events.Scalars("train/loss_step")
    per_epoch = len(steps) // 2
    assert per_epoch > 1 and [s.step for s in steps] == list(range(1, 2 * per_epoch + 1))
    for tag, key in [("valid/auc", "valid_auc"), ("train/lr", "lr"), ("train/loss", "train_loss")]:
        logged = events.Scalars(tag)
        assert [s.step for s in logged] == [1, 2]
        assert [s.value for s in logged] == pytest.approx([h[key] for h in history], rel=1e-6)


def test_tensorboard_without_the_package_says_how_to_install(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    code, _, err = run(capsys, "train", "--data", tiny_data_master, "--config", tiny_config_file,
                       "--out", tmp_path / "run", "--tensorboard", tmp_path / "tb")  # fmt: skip
    assert code == 2 and 'pip install "mmctr[tensorboard]"' in err
    assert not (tmp_path / "run" / "model.pt").exists()
