"""mmctr off Linux: without ``fcntl`` (Windows) the package imports, the CLI answers, the run
lock falls back to an exclusive lock file that still keeps a second writer out, `mmctr bench`
reports no peak memory without ``resource``, and without ``os.sched_getaffinity`` (macOS,
Windows) the cores come from ``os.cpu_count``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mmctr.cli import launch
from mmctr.errors import RunLockedError
from mmctr.experiments.parallel import threads_per_job
from mmctr.runtime import available_cpus
from mmctr.training import lock
from mmctr.training.lock import LOCK_FILE, run_lock

# what a platform without fcntl and sched_getaffinity looks like to Python
OFF_LINUX = (
    "import os, sys\nsys.modules['fcntl'] = None\nsys.modules['resource'] = None\n"
    "del os.sched_getaffinity\n"
)


def off_linux(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", OFF_LINUX + code, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_the_package_and_its_help_work_without_fcntl_and_affinity() -> None:
    done = off_linux(
        "import mmctr\n"
        "from mmctr.cli.main import main\n"
        "from mmctr.runtime import available_cpus\n"
        "from mmctr.training import lock\n"
        "assert lock.fcntl is None and available_cpus() == (os.cpu_count() or 1)\n"
        "from mmctr.runtime import peak_rss_gb\n"
        "import mmctr.training.bench\n"
        "assert peak_rss_gb() is None\n"
        "for argv in (['--help'], ['train', '--help'], ['bench', '--help']):\n"
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, argv\n"
        "print('version', mmctr.__version__)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "usage: mmctr [-h]" in done.stdout and "usage: mmctr train" in done.stdout
    assert "usage: mmctr bench" in done.stdout
    assert "version " in done.stdout


def test_cores_fall_back_to_cpu_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert available_cpus() == 8 and threads_per_job(3) == 2
    seen: dict[str, str] = {}

    def fake_run(cmd: list[str], env: dict[str, str], check: bool) -> subprocess.CompletedProcess:
        seen.update(env)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    assert launch.run_torchrun(2, ["train", "--nproc", "2"]) == 0
    assert seen["OMP_NUM_THREADS"] == "4"


@pytest.fixture
def without_fcntl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lock, "fcntl", None)


@pytest.mark.usefixtures("without_fcntl")
def test_the_fallback_lock_keeps_out_a_second_holder_until_its_process_is_gone(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", OFF_LINUX + "import time\nfrom pathlib import Path\n"
         "from mmctr.training.lock import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
         str(run)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError) as refused, run_lock(run):
            pass
        message, host = str(refused.value), socket.gethostname()
        assert f"{run} is being written by process {holder.pid} on {host}" in message
        assert str(run / LOCK_FILE) in message
    finally:
        holder.kill()  # SIGKILL: the lock file stays behind, naming a process that is gone
        holder.wait()
    assert f"process {holder.pid} " in (run / LOCK_FILE).read_text()
    with run_lock(run):  # taken over
        assert f"process {os.getpid()} " in (run / LOCK_FILE).read_text()
        with pytest.raises(RunLockedError, match=f"process {os.getpid()} "), run_lock(run):
            pass  # the same process a second time is a second writer too
    assert not (run / LOCK_FILE).exists(), "releasing the fallback lock removes its file"


@pytest.mark.usefixtures("without_fcntl")
def test_the_fallback_lock_never_takes_a_lock_it_cannot_judge(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for text in ("process 1 on another-machine (mmctr train)\n", "", "garbled"):
        (run / LOCK_FILE).write_text(text)
        with pytest.raises(RunLockedError, match="remove it if no such process"), run_lock(run):
            pass
        assert (run / LOCK_FILE).read_text() == text, "left as it was"


@pytest.mark.usefixtures("without_fcntl")
def test_the_fallback_lock_leaves_no_folder_after_a_failed_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), run_lock(tmp_path / "new"):
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()
    with run_lock(tmp_path / "a"), run_lock(tmp_path / "b"):
        assert {p.name for p in (tmp_path / "a").iterdir()} == {LOCK_FILE}
    assert list((tmp_path / "a").iterdir()) == []
