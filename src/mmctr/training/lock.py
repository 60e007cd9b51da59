"""One writer per run folder: an advisory lock held while a process trains into it.

Where the platform has ``fcntl`` (Linux, macOS), the lock is ``flock`` on ``RUN/.lock``. The
kernel drops it when its process ends, however it ends, so a lock left by a killed run never
blocks the resume; the file stays and only names the last holder. Where it has not (Windows),
the lock is the file itself (``lock_file.py``): created exclusively, naming its holder, removed
on release and taken over once the process it names is gone. Either way a second writer is
refused at once with the holder's process id, machine and command line.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from mmctr.errors import RunLockedError
from mmctr.training.lock_file import hold_lock_file, holder_line

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock file alone is the lock
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold the run folder ``root`` (made if missing) for this process, or raise
    RunLockedError naming the live process that holds it."""
    made = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    release = _hold(path, root)
    failed = False
    try:
        for stale in root.glob(".*.tmp"):  # temp files of a writer killed mid-write
            stale.unlink(missing_ok=True)
        yield
    except BaseException:
        failed = True
        raise
    finally:
        if failed and made and {p.name for p in root.iterdir()} <= {LOCK_FILE}:
            path.unlink(missing_ok=True)  # a run that failed before writing anything leaves
            release()  # no folder: the file goes while still held, then the lock, then the folder
            root.rmdir()
        else:
            release()


def _hold(path: Path, root: Path) -> Callable[[], None]:
    """Take the lock on ``path``; returns what releases it."""

    def locked(holder: str) -> RunLockedError:
        return RunLockedError(
            f"{root} is being written by {holder}; wait for it to finish, stop it, or "
            "choose another --out"
        )

    if fcntl is None:
        return hold_lock_file(path, locked)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        os.close(fd)
        raise locked(holder or "another process") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, holder_line().encode(), 0)
    return lambda: os.close(fd)  # closing the descriptor releases the lock
