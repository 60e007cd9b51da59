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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/clear_refs is Linux's")
def test_peak_rss_starts_again_from_the_current_memory() -> None:
    import numpy as np

    from mmctr.runtime import peak_rss_gb, reset_peak_rss

    big = np.ones(2**27)  # 1 GiB, touched
    del big
    before = peak_rss_gb()
    assert before is not None and before > 1.0
    assert reset_peak_rss() is True
    after = peak_rss_gb()
    assert after is not None and after < before - 0.9  # the freed GiB no longer counts


def test_epoch_costs_take_the_mean_speed_and_the_largest_peak() -> None:
    from mmctr.experiments.rows import epoch_costs

    history = [
        {"train_samples_per_s": 100.0, "peak_rss_gb": 0.5},
        {"train_samples_per_s": 300.0, "peak_rss_gb": 0.75},
        {"train_samples_per_s": 200.0},  # an epoch of a run from before peaks were recorded
    ]
    assert epoch_costs(history) == (200.0, 0.75)
    assert epoch_costs([{"epoch": 1}]) == (None, None)
