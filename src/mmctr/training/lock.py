"""One writer per run folder: an advisory lock held while a process trains into it.

The lock is ``flock`` on ``RUN/.lock``. The kernel drops it when its process ends, however it
ends, so a lock left by a killed run never blocks the resume; the file stays and only names the
last holder. A second writer is refused at once with the holder's process id and command line.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from mmctr.errors import RunLockedError

LOCK_FILE = ".lock"


@contextlib.contextmanager
def run_lock(root: Path) -> Iterator[None]:
    """Hold the run folder ``root`` (made if missing) for this process, or raise
    RunLockedError naming the live process that holds it."""
    made = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise RunLockedError(
                f"{root} is being written by {holder}; wait for it to finish, stop it, or "
                "choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} ({' '.join(sys.argv)[:300]})\n".encode(), 0)
        for stale in root.glob(".*.tmp"):  # temp files of a writer killed mid-write
            stale.unlink(missing_ok=True)
        try:
            yield
        except BaseException:
            if made and [p.name for p in root.iterdir()] == [LOCK_FILE]:
                path.unlink()  # a run that failed before writing anything leaves no folder
                root.rmdir()
            raise
    finally:
        os.close(fd)  # closing the descriptor releases the lock
