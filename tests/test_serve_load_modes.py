"""bench/serve_load.py's open-loop modes, run as the script against the `mmctr serve` it starts
on the tiny run, with durations of seconds: overload (503s with Retry-After, nothing else),
fault (a stopped and a killed model process, both recovered from) and reload (to a run of
another seed under load: no error, and the new run's scores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

BENCH = Path(__file__).resolve().parents[1] / "bench"


def serve_load(tiny_run: Path, data: Path, tmp_path: Path, *flags: str) -> tuple[int, Any, str]:
    """Run the script on a server it starts; its exit code, JSON report and stderr."""
    out = tmp_path / "report.json"
    cmd = [sys.executable, "serve_load.py", "--run", str(tiny_run), "--data", str(data),
           "--threads", "1", "--warmup", "5", "--out", str(out), *flags]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=BENCH, env=env, capture_output=True, text=True, timeout=240)
    report = json.loads(out.read_text()) if out.exists() else None
    return done.returncode, report, done.stderr


def test_overload_refuses_with_503_and_retry_after_only(
    tiny_run_master: Path, tiny_data_master: Path, tmp_path: Path
) -> None:
    flags = ["--mode", "overload", "--capacity-seconds", "2", "--seconds", "4"]
    code, report, err = serve_load(tiny_run_master, tiny_data_master, tmp_path, *flags)
    assert code == 0, err
    assert {"capacity", "unloaded", "overload", "memory_mb", "p99_ratio"} <= set(report)
    assert report["failures"] == [] and report["capacity"]["requests_per_s"] > 0
    assert set(report["unloaded"]) == {"open_loop", "sequential"}
    assert report["unloaded"]["sequential"]["requests"] == 200
    overload = report["overload"]
    assert overload["rate_per_s"] == pytest.approx(2 * report["capacity"]["requests_per_s"], 0.01)
    assert set(overload["status"]) <= {"200", "503"} and overload["ok_200"] > 0
    assert overload["every_503_had_retry_after"] and overload["503_without_retry_after"] == 0
    assert overload["transport_errors"] == 0 and overload["other_5xx"] == 0
    assert sum(overload["unavailable_503_by_reason"].values()) == overload["status"].get("503", 0)
    assert {"p50", "p95", "p99", "max"} <= set(overload["latency_ms_200"])
    assert {"achieved_rate_per_s", "late_ms", "kept_up"} <= set(overload["generator"])
    memory = report["memory_mb"]
    assert all(memory[k] > 0 for k in ("rss_at_10pct", "rss_at_50pct", "rss_at_100pct"))
    assert memory["rss_peak"] >= memory["rss_at_50pct"] and memory["vmhwm"] > 0
    assert set(report["p99_ratio"]) == {"vs_open_loop_half_capacity", "vs_sequential"}


def test_fault_a_stopped_then_a_killed_model_process_recover(
    tiny_run_master: Path, tiny_data_master: Path, tmp_path: Path
) -> None:
    # the stopped process is killed after the model timeout (1 s), and each replacement loads
    # in a few seconds on a busy machine: 6 s between the faults and after the second
    code, report, err = serve_load(
        tiny_run_master, tiny_data_master, tmp_path, "--mode", "fault", "--rate", "30",
        "--seconds", "13", "--stop-at", "1", "--kill-at", "7", "--recover-within", "20",
        "--serve-arg=--model-timeout-ms=1000", "--serve-arg=--deadline-ms=400",
    )  # fmt: skip
    assert code == 0, err
    stopped, killed = report["faults"]
    assert (stopped["signal"], killed["signal"]) == ("SIGSTOP", "SIGKILL")
    assert killed["pid"] != stopped["pid"] == report["model_process_at_start"]
    for fault in (stopped, killed):
        assert fault["recovery_s"] is not None and 0 <= fault["recovery_s"] < 20, fault
        assert fault["first_503_after_s"] is not None, fault
        assert all(k.startswith("503 ") for k in fault["answers_until_recovery"]), fault
        assert fault["ready_last_503_after_s"] is not None, fault
    assert "model_restart" in report["unavailable_503_by_reason"]
    assert set(report["status"]) <= {"200", "503"} and report["503_without_retry_after"] == 0
    assert [c["status"] for c in report["ready_changes"]] == ["200", "503", "200", "503", "200"]
    assert report["stopped_process"]["stopped_process_gone"]
    assert report["stopped_process"]["left_stopped_pids"] == []
    assert report["failures"] == []


def test_reload_under_load_answers_every_request_and_switches_runs(
    tiny_run_master: Path, tiny_data_master: Path, retrained: Path, tmp_path: Path
) -> None:
    code, report, err = serve_load(
        tiny_run_master, tiny_data_master, tmp_path, "--mode", "reload", "--reload-run",
        str(retrained), "--rate", "30", "--seconds", "6", "--reload-at", "1.5",
    )  # fmt: skip
    assert code == 0, err
    assert report["errors"] == 0 and report["transport_errors"] == 0
    assert report["status"] == {"200": report["requests"]} and report["requests"] == 180
    reload = report["reload"]
    assert reload["status"] == 200 and reload["answer"]["previous"] == report["run"]
    new = reload["answer"]["run"]
    assert new.startswith("run-b@") and new != report["run"]
    probe = report["probe"]
    assert probe["matches_reload_run"] and probe["max_abs_diff_to_reload_run"] <= 1e-5
    assert probe["differs_from_before"]
    assert (probe["before_run"], probe["after_run"]) == (report["run"], new)
    assert report["failures"] == []


def test_modes_refuse_what_they_cannot_do(tiny_run_master: Path, tmp_path: Path) -> None:
    code, report, err = serve_load(tiny_run_master, tmp_path, tmp_path, "--mode", "reload")
    assert code == 2 and report is None and "--mode reload needs --reload-run" in err
    code, _, err = serve_load(tiny_run_master, tmp_path, tmp_path, "--mode", "fault",
                              "--stop-at", "5", "--kill-at", "3")  # fmt: skip
    assert code == 2 and "--stop-at < --kill-at" in err
    code, _, err = serve_load(tiny_run_master, tmp_path, tmp_path, "--mode", "overload",
                              "--capacity", "0")  # fmt: skip
    assert code == 2 and "--capacity" in err and "must be positive" in err
