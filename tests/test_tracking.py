"""Tracking on MLflow (``--track``): runs written to a real local store and read back through
``MlflowClient``; an experiment as a parent run with its jobs as children; the failure paths.

One store serves the module (creating its SQLite tables takes seconds); each test logs into
an MLflow experiment of its own."""

from __future__ import annotations

import json
import pickle
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from mmctr.cli.main import main
from mmctr.training.tracking import Tracking, tracked_run
from mmctr.version import mmctr_version

# MLflow's SQL store on SQLAlchemy 2.1: not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")


def run(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder for --track, its store created once for the module."""
    pytest.importorskip("mlflow", reason="the track extra is not installed")
    folder = tmp_path_factory.mktemp("mlflow") / "store"
    Tracking.from_flag(str(folder))
    return folder


def client_of(store: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


def runs_of(store: Path, experiment: str) -> list[Any]:
    client = client_of(store)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    return list(client.search_runs([found.experiment_id]))


def flat(table: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """config.json as the params MLflow should hold: dotted names, non-strings as JSON."""
    out: dict[str, str] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, str) else json.dumps(value)
    return out


def artifacts(store: Path, run_id: str) -> set[str]:
    return {f.path for f in client_of(store).list_artifacts(run_id)}


def test_train_logs_config_epochs_summary_and_small_files(
    store: Path,
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run-a"
    args = ["--set", "train.epochs=2", "--set", "train.patience=2", "--no-progress", "--track"]
    code, _, err = run(capsys, "train", "--data", tiny_data_master, "--config", tiny_config_file,
                       "--out", out, *args, store, "--track-experiment", "train")  # fmt: skip
    assert code == 0, err
    (logged,) = runs_of(store, "train")
    assert logged.info.run_name == "run-a" and logged.info.status == "FINISHED"
    assert logged.data.tags["mmctr.run_dir"] == str(out.resolve())
    saved = json.loads((out / "config.json").read_text())
    assert logged.data.tags["mmctr.version"] == saved.pop("mmctr_version") == mmctr_version()
    assert logged.data.params == flat(saved)  # the config, without the version beside it
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    points = client_of(store).get_metric_history(logged.info.run_id, "valid_auc")
    assert sorted((p.step, p.value) for p in points) == [
        (h["epoch"], pytest.approx(h["valid_auc"])) for h in history
    ]
    summary = json.loads((out / "summary.json").read_text())
    metrics = logged.data.metrics
    assert metrics["best_valid_auc"] == pytest.approx(summary["best_valid"]["auc"])
    assert metrics["best_valid_gauc"] == pytest.approx(summary["best_valid"]["gauc"])
    assert metrics["best_epoch"] == summary["best_epoch"] and metrics["epochs_run"] == 2
    assert metrics["train_seconds_total"] == pytest.approx(summary["train_seconds"])
    files = artifacts(store, logged.info.run_id)
    assert {"config.json", "metrics.jsonl", "summary.json"} <= files
    assert not any(f.endswith(".pt") for f in files)
    assert logged.info.artifact_uri.startswith((store / "artifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_a_sqlite_uri_is_used_as_given(
    store: Path,
    tiny_data_master: Path,
    tiny_config_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uri = f"sqlite:///{store / 'mlflow.db'}"
    code, _, err = run(capsys, "train", "--data", tiny_data_master, "--config", tiny_config_file,
                       "--out", tmp_path / "run-b", "--set", "train.epochs=1", "--no-progress",
                       "--track", uri, "--track-experiment", "sqlite-uri")  # fmt: skip
    assert code == 0, err
    (logged,) = runs_of(store, "sqlite-uri")
    assert logged.info.run_name == "run-b"
    assert len(client_of(store).get_metric_history(logged.info.run_id, "valid_auc")) == 1
    assert logged.info.artifact_uri.startswith((store / "artifacts").as_uri())  # beside the db


def test_an_experiment_is_a_parent_run_with_its_jobs_as_children(
    store: Path, tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    out = tmp_path / "k-sweep"
    args = ["experiment", "sweep", "--data", tiny_data_master, "--config", tiny_config_file,
            "--out", out, "--param", "model.target_transformer.first_k", "--values", "1,2",
            "--quick", "--jobs", "2", "--track", store, "--track-experiment", "sweep"]  # fmt: skip
    code, _, err = run(capsys, *args)
    assert code == 0, err
    logged = runs_of(store, "sweep")
    (parent,) = [r for r in logged if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in logged if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.run_name == "k-sweep" and parent.info.status == "FINISHED"
    assert parent.data.params["kind"] == "sweep"
    assert {"plan.json", "results.csv", "results.md"} <= artifacts(store, parent.info.run_id)
    assert sorted(c.info.run_name for c in children) == ["first_k=1-seed0", "first_k=2-seed0"]
    for child in children:
        row = json.loads((out / "runs" / child.info.run_name / "result.json").read_text())
        assert child.info.status == "FINISHED"
        assert child.data.params["model.target_transformer.first_k"] == row["value"]
        assert child.data.metrics["test_auc"] == pytest.approx(row["test_auc"])
        assert child.data.metrics["best_valid_auc"] == pytest.approx(row["valid_auc"])
        assert "result.json" in artifacts(store, child.info.run_id)
    code, _, err = run(capsys, *args)  # every job read back: a new parent, no child again
    assert code == 0, err
    again = runs_of(store, "sweep")
    assert len(again) == 4 and sum("mlflow.parentRunId" in r.data.tags for r in again) == 2


def test_a_failure_inside_a_tracked_run_ends_it_failed(store: Path, tmp_path: Path) -> None:
    tracking = Tracking.from_flag(str(store), "failures")
    with pytest.raises(RuntimeError, match="boom"), tracked_run(tracking, "broken", None, tmp_path):
        raise RuntimeError("boom")
    with tracked_run(tracking, "recorded") as recorded:
        recorded.mark_failed("a job failed")
    by_name = {r.info.run_name: r for r in runs_of(store, "failures")}
    assert by_name["broken"].info.status == "FAILED"
    assert by_name["broken"].data.tags["mmctr.error"] == "RuntimeError: boom"
    assert by_name["recorded"].info.status == "FAILED"


def test_without_mlflow_train_says_how_to_install_and_writes_nothing(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import now fails
    code, _, err = run(capsys, "train", "--data", tiny_data_master, "--config", tiny_config_file,
                       "--out", tmp_path / "run", "--track", tmp_path / "store")  # fmt: skip
    assert code == 2 and "pip install 'mmctr[track]'" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "store").exists()


def test_an_unreachable_server_fails_before_training(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    pytest.importorskip("mlflow", reason="the track extra is not installed")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = f"http://127.0.0.1:{port}"
    code, _, err = run(capsys, "train", "--data", tiny_data_master, "--config", tiny_config_file,
                       "--out", tmp_path / "run", "--track", server)  # fmt: skip
    assert code == 2 and f"cannot reach the tracking server at 127.0.0.1:{port}" in err
    assert not (tmp_path / "run").exists()


def test_track_experiment_needs_track(
    tiny_data_master: Path, tiny_config_file: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    code, _, err = run(capsys, "train", "--data", tiny_data_master, "--config", tiny_config_file,
                       "--out", tmp_path / "run", "--track-experiment", "x")  # fmt: skip
    assert code == 2 and "--track-experiment needs --track" in err


def test_the_flag_a_folder_or_a_uri_and_a_value_that_pickles(tmp_path: Path) -> None:
    folder = Tracking.parse(str(tmp_path / "store"), "exp")
    assert folder.uri == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    assert folder.artifact_location == (tmp_path / "store" / "artifacts").as_uri()
    assert not (tmp_path / "store").exists()  # parse touches nothing
    server = Tracking.parse("http://mlflow.example:5000")
    assert (server.uri, server.artifact_location, server.experiment) == (
        "http://mlflow.example:5000", None, "mmctr",
    )  # fmt: skip
    child = folder.child_of("abc")
    assert pickle.loads(pickle.dumps(child)) == child and child.parent_run_id == "abc"
