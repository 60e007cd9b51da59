"""Metrics of a server of several processes (``mmctr serve --workers N``) as one.

Each uvicorn worker has its own counters, so without help a Prometheus scrape, answered by
whichever worker accepts the connection, would see one worker's share. prometheus_client's
multiprocess mode keeps every worker's values in memory-mapped files of one folder, and a
scrape reads them all: counters and histograms are summed over every worker that ever ran
(a worker that died and was replaced keeps its share), gauges over the workers alive.

The mode is chosen when prometheus_client is first imported, from the environment variable
below, so ``mmctr serve`` sets it before the workers start: a fresh folder of its own, removed
when the server stops, or the folder the operator named in that variable (its old metric
files are deleted first: values left by a previous server would be counted again).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from mmctr.errors import ConfigError

ENV = "PROMETHEUS_MULTIPROC_DIR"


def enabled() -> bool:
    """Whether this process keeps its metrics in the shared folder: the variable was set
    when prometheus_client was imported here (setting it later changes nothing)."""
    return values.ValueClass is not values.MutexValue and bool(os.environ.get(ENV))


def prepare() -> Path:
    """The shared folder for the workers about to start, named in the environment that they
    inherit; emptied of old metric files, or made (and removed at exit) if none was named."""
    named = os.environ.get(ENV)
    if not named:
        folder = Path(tempfile.mkdtemp(prefix="mmctr-metrics-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        os.environ[ENV] = str(folder)
        return folder
    folder = Path(named)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.db"):
            old.unlink()
    except OSError as exc:
        raise ConfigError(f"{ENV}={named}: cannot use it for the workers' metrics ({exc})") from exc
    return folder


def exposition() -> bytes:
    """Every worker's metrics together, in Prometheus text format. The live-gauge files of
    workers that have died are dropped first, so that gauges count living workers only."""
    folder = os.environ[ENV]
    for pid in _pids_with_live_gauges(Path(folder)):
        if not _alive(pid):
            mark_process_dead(pid, folder)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    return generate_latest(registry)


def _pids_with_live_gauges(folder: Path) -> set[int]:
    pids = set()
    for file in folder.glob("gauge_live*_*.db"):
        pid = file.stem.rsplit("_", 1)[-1]
        if pid.isdigit():
            pids.add(int(pid))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process with that pid: not ours, but alive
        return True
    return True
