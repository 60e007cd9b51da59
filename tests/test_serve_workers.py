"""mmctr serve --workers N: one Prometheus scrape shows the whole server, whichever worker
answers it, and a worker that dies keeps its share of the counters."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from mmctr.errors import ConfigError

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from serve_helpers import metric  # noqa: E402

from mmctr.serve import multiproc  # noqa: E402

BODY = {"history": [3, 1, 4], "context": {"likes_level": 3, "views_level": 1},
        "candidates": [5, 9, 2]}  # fmt: skip
SCORED = 'mmctr_requests_total{path="/v1/score",status="200"}'


def scrape(url: str) -> str:
    """One scrape on a connection of its own (so the scrapes spread over the workers)."""
    answer = httpx.get(f"{url}/metrics", timeout=10, headers={"connection": "close"})
    assert answer.status_code == 200
    return answer.text


def uvicorn_workers(server: int) -> list[int]:
    """The server's child processes that run an app (spawned by multiprocessing)."""
    children = Path(f"/proc/{server}/task/{server}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def wait_until(check: Any, proc: subprocess.Popen[str], what: str, seconds: float = 90) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            if (got := check()) is not None:
                return got
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen within {seconds:g} s")


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc for the workers")
def test_one_scrape_counts_every_worker(tiny_run_master: Path, tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    folder.mkdir()
    (folder / "counter_1.db").write_bytes(b"left by an old server")  # must not be read
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", multiproc.ENV: str(folder)}
    cmd = [sys.executable, "-m", "mmctr", "serve", "--run", str(tiny_run_master), "--port",
           str(port), "--workers", "2", "--threads", "1"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        up = wait_until(lambda: metric(scrape(url), "mmctr_workers") == 2 or None, proc, "2 up")
        assert up and not (folder / "counter_1.db").exists()
        for _ in range(30):  # each on a new connection, so both workers answer some
            answer = httpx.post(f"{url}/v1/score", json=BODY, headers={"connection": "close"})
            assert answer.status_code == 200
        for _ in range(8):  # every scrape sees all 30, whichever worker reads the files
            text = scrape(url)
            assert metric(text, SCORED) == 30 and metric(text, "mmctr_workers") == 2
            assert metric(text, "mmctr_rows_in_flight") == 0
            assert metric(text, "mmctr_candidates_scored_total") == 90
        os.kill(uvicorn_workers(proc.pid)[0], signal.SIGKILL)  # uvicorn starts another

        def replaced() -> str | None:
            text = scrape(url)
            return text if len(uvicorn_workers(proc.pid)) == 2 and (
                metric(text, "mmctr_workers") == 2) else None  # fmt: skip

        text = wait_until(replaced, proc, "the killed worker's replacement")
        assert metric(text, SCORED) == 30  # the dead worker's share is still counted
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err


def test_a_named_folder_is_emptied_of_old_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "gauge_livesum_12.db").write_bytes(b"old")
    (folder / "notes.txt").write_text("kept")
    monkeypatch.setenv(multiproc.ENV, str(folder))
    assert multiproc.prepare() == folder
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]


def test_an_unusable_folder_is_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(multiproc.ENV, str(tmp_path / "file"))
    with pytest.raises(ConfigError, match=multiproc.ENV):
        multiproc.prepare()


def test_without_a_named_folder_one_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(multiproc.ENV, "")  # restored after the test
    folder = multiproc.prepare()
    assert folder.is_dir() and os.environ[multiproc.ENV] == str(folder)
    folder.rmdir()


def test_the_cli_refuses_it_before_listening(
    tiny_run_master: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    import uvicorn

    from mmctr.cli.main import main
    from mmctr.serve import app as serve_app

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not listen"))
    monkeypatch.setenv(serve_app.SETTINGS_ENV, "")  # restored after the test
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(multiproc.ENV, str(tmp_path / "file"))
    assert main(["serve", "--run", str(tiny_run_master), "--workers", "2"]) == 2
    captured = capsys.readouterr()
    assert multiproc.ENV in captured.err and "on http://" not in captured.out + captured.err
