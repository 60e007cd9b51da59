"""What the serving tests share: reading one series of a Prometheus scrape, and the model
processes (multiprocessing children named ``mmctr-model``) alive in the test's process."""

from __future__ import annotations

import multiprocessing
from multiprocessing.process import BaseProcess


def metric(text: str, series: str) -> float:
    """The value of ``series`` (name and labels, exactly as scraped) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} is not in the metrics:\n{text}")


def model_children() -> list[BaseProcess]:
    return [p for p in multiprocessing.active_children() if p.name == "mmctr-model"]
