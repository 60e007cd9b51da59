"""Process-wide settings that make the training path faster without changing any result,
and the cores this process may use."""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt(3) parameter numbers in glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
OPT_OUT = "MMCTR_SYSTEM_MALLOC"


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back at once.

    glibc serves every allocation above 32 MB with a fresh mmap and unmaps it on free, so a
    buffer of that size allocated every step (the paper config's 330 MB cross-network weight
    gradients) is page-faulted in anew each time. Served from the heap and kept there, it is
    reused, which shortens a paper-config training step (docs/performance.md has the
    timings). Resident memory then stays at its
    high-water mark, as with any caching allocator. Returns whether the setting took; set
    MMCTR_SYSTEM_MALLOC=1 to leave malloc alone. Only glibc (Linux) is touched.
    """
    libc = None if os.environ.get(OPT_OUT) else _glibc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def available_cpus() -> int:
    """The cores this process may run on: its CPU affinity where the platform reports one
    (Linux), else every core of the machine (macOS and Windows have no sched_getaffinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def peak_rss_gb() -> float | None:
    """This process's peak resident memory in GB (2^30 bytes), or None where the platform has
    no ``resource`` module (Windows). On Linux the address space's high-water mark (VmHWM),
    which ``reset_peak_rss`` starts again; getrusage's figure also keeps the peaks of threads
    that have ended, which no reset clears."""
    try:
        import resource
    except ImportError:
        return None
    hwm = _proc_status_kb("VmHWM")
    if hwm is not None:
        return hwm / 1024**2
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # bytes on macOS, KiB elsewhere
    return kb / (1024**3 if sys.platform == "darwin" else 1024**2)


def _proc_status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (Linux), or None where there is none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Start this process's peak resident memory (what peak_rss_gb reads) again from its
    current resident memory, so that a peak read later belongs to the work done since.
    Linux only (``/proc/self/clear_refs``); returns whether it took. Memory the process
    already holds (data read before, freed memory malloc keeps) counts from the start."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def release_freed_memory() -> None:
    """Hand memory that is free but kept (keep_freed_memory, pyarrow's pool) back to the system.

    For a process that is done with a large data set but lives on, like the parent of
    ``experiment --jobs``, whose workers read their own copies.
    """
    import gc

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has mallopt and malloc_trim), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
