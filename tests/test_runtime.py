"""The process-wide malloc setting: applied on glibc, skipped on request."""

from __future__ import annotations

import ctypes.util
import sys

import pytest

from mmctr.runtime import OPT_OUT, keep_freed_memory, release_freed_memory

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or ctypes.util.find_library("c") != "libc.so.6",
    reason="glibc only",
)


def test_opt_out_leaves_malloc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(OPT_OUT, "1")
    assert keep_freed_memory() is False


@glibc_only
def test_applies_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(OPT_OUT, raising=False)
    assert keep_freed_memory() is True


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        kb = next(line.split()[1] for line in fh if line.startswith("VmRSS"))
    return int(kb) / 1024


@glibc_only
def test_release_hands_kept_memory_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    monkeypatch.delenv(OPT_OUT, raising=False)
    assert keep_freed_memory() is True
    block = np.ones(256 * 2**20 // 8)  # 256 MB, touched
    held = _rss_mb()
    del block
    kept = _rss_mb()  # freed but kept by malloc
    release_freed_memory()
    assert held - kept < 64, "malloc should have kept the freed block"
    assert kept - _rss_mb() > 192, "release_freed_memory should have handed the block back"
