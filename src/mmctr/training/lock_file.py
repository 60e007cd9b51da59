"""The run lock where ``fcntl`` is missing (Windows): the lock file itself is the lock.

Taking the lock creates ``RUN/.lock`` exclusively (``O_CREAT | O_EXCL``, atomic on local file
systems) and writes the holder's line into it; releasing it removes the file. A file left by a
process that died without releasing (killed, a power cut) names a process that no longer
exists on this machine, so it is taken over: removed, and the exclusive create tried once more.
The holder is judged alive when its process id is in use on this machine (``os.kill(pid, 0)``
on POSIX, ``OpenProcess`` on Windows). A file written on another machine (a shared folder), or
one that names no process, is never taken over: the refusal says which file to remove.

Limits, against ``flock``: a process id reused by an unrelated live process keeps a stale lock
until it ends or the file is removed; two processes taking over the same stale lock in the
same instant may both start; and nothing is released by the kernel, only by the holder or by
the takeover. docs/reliability.md ("One writer per run folder") says the same.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from collections.abc import Callable
from pathlib import Path

_HOLDER = re.compile(r"process (\d+) on (\S+) ")


def holder_line() -> str:
    """What a lock file says about its holder: process id, machine and command line."""
    return f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv)[:300]})\n"


def hold_lock_file(path: Path, locked: Callable[[str], Exception]) -> Callable[[], None]:
    """Create ``path`` exclusively as this process's lock and return what releases it; raise
    ``locked(holder)`` while a live process (or an unknown one) holds it."""
    line = holder_line()
    for _ in range(2):  # the second try follows the removal of a dead holder's file
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read(path)
            if _may_be_alive(holder):
                raise locked(
                    f"{holder or 'another process'} (lock file {path}: remove it if no such "
                    "process is running)"
                ) from None
            path.unlink(missing_ok=True)  # its holder is gone
            continue
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return lambda: _release(path, line)
    raise locked(f"another process (lock file {path} keeps coming back)")


def _release(path: Path, line: str) -> None:
    """Remove the lock file if it is still this holder's."""
    if _read(path) == line.strip():
        path.unlink(missing_ok=True)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:  # gone meanwhile, or unreadable
        return ""


def _may_be_alive(holder: str) -> bool:
    """False only for a holder known to be gone: a process of this machine that has ended."""
    found = _HOLDER.match(holder + " ")
    if found is None or found[2] != socket.gethostname():
        return True
    return pid_alive(int(found[1]))


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine (it may be another user's)."""
    if sys.platform == "win32":
        return _windows_pid_alive(pid)
    try:
        os.kill(pid, 0)  # signal 0: checks the process exists, sends nothing
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to another user
        return True
    return True


if sys.platform == "win32":
    import ctypes
    from ctypes import wintypes

    _QUERY_LIMITED_INFORMATION = 0x1000
    _STILL_ACTIVE = 259
    _ACCESS_DENIED = 5

    def _windows_pid_alive(pid: int) -> bool:
        """os.kill(pid, 0) would end the process on Windows; ask the kernel instead."""
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        kernel32.OpenProcess.restype = wintypes.HANDLE
        kernel32.OpenProcess.argtypes = (wintypes.DWORD, wintypes.BOOL, wintypes.DWORD)
        handle = kernel32.OpenProcess(_QUERY_LIMITED_INFORMATION, False, pid)
        if not handle:  # no such process, or one we may not query (which exists)
            return ctypes.get_last_error() == _ACCESS_DENIED
        try:
            code = wintypes.DWORD()
            if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
                return True  # cannot tell: never take the lock from it
            return code.value == _STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
