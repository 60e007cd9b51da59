"""mmctr's version, from one place: the installed package's metadata (pyproject.toml's
``version``), so that the number is written once and every run can record it.

A source tree that was never installed has no metadata; it reports ``0+unknown`` (a valid
PEP 440 version that sorts below every release) rather than a number it cannot vouch for.
"""

from __future__ import annotations

from importlib import metadata

UNKNOWN = "0+unknown"
RECORD_KEY = "mmctr_version"  # the key a run's config.json and summary.json record it under


def mmctr_version() -> str:
    """The installed mmctr's version, e.g. ``0.1.0``; ``0+unknown`` when not installed."""
    try:
        return metadata.version("mmctr")
    except metadata.PackageNotFoundError:
        return UNKNOWN
