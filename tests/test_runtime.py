"""The process-wide malloc setting: applied on glibc, skipped on request."""

from __future__ import annotations

import ctypes.util
import os
import subprocess
import sys

import pytest

from mmctr.runtime import OPT_OUT, _proc_status_kb, keep_freed_memory, release_freed_memory

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
    kb = _proc_status_kb("VmRSS")
    assert kb is not None, "/proc/self/status has no VmRSS"
    return kb / 1024


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


PEAK_AFTER_RESET = """
import numpy as np
from mmctr.runtime import _proc_status_kb, peak_rss_gb, reset_peak_rss
big = np.ones(2**28)  # 2 GiB, touched; a fresh process hands it back to the system on free
del big
before = peak_rss_gb()
assert reset_peak_rss() is True
after = peak_rss_gb()
print(before, after, _proc_status_kb("VmRSS") / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs is Linux's")
def test_peak_rss_starts_again_from_the_current_memory() -> None:
    # in a fresh process: this one may keep freed memory (keep_freed_memory), which still counts
    env = {**os.environ, OPT_OUT: "1"}
    out = subprocess.run(
        [sys.executable, "-c", PEAK_AFTER_RESET], env=env, capture_output=True, text=True,
        check=True, timeout=120,
    ).stdout  # fmt: skip
    before, after, rss = (float(x) for x in out.split())
    assert before > 2.0 and after < before - 1.0  # the freed 2 GiB no longer count
    assert abs(after - rss) < 0.1  # the peak starts again from the memory held now


def test_epoch_costs_take_the_mean_speed_and_the_largest_peak() -> None:
    from mmctr.experiments.rows import epoch_costs

    history = [
        {"train_samples_per_s": 100.0, "peak_rss_gb": 0.5},
        {"train_samples_per_s": 300.0, "peak_rss_gb": 0.75},
        {"train_samples_per_s": 200.0},  # an epoch of a run from before peaks were recorded
    ]
    assert epoch_costs(history) == (200.0, 0.75)
    assert epoch_costs([{"epoch": 1}]) == (None, None)
