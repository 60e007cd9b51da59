"""The inputs of the embedding pipeline: ids checked, texts and image paths made payloads.

A payload is what an encoder gets (a string, or an image path to decode), or None when the
item lacks that modality; each has a 64-bit key for the cache.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmctr.errors import DataError
from mmctr.prepare.embed.base import missing_package
from mmctr.prepare.embed.cache import fingerprint


@dataclass
class ModalityStats:
    """Counts for one modality over the N items."""

    named: int = 0  # items with a non-empty text / image path
    cached: int = 0  # of those, served from the cache
    encoded: int = 0  # of those, encoded in this run
    unusable: int = 0  # image paths that do not exist or do not decode: embedded as 'no image'
    examples: list[str] = field(default_factory=list)  # the first few unusable images

    @property
    def usable(self) -> int:
        return self.cached + self.encoded


def check_unique_ids(ids: np.ndarray) -> None:
    """Raise DataError naming the first repeated id and the two rows that hold it."""
    order = np.argsort(ids, kind="stable")
    repeats = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if repeats.size:
        first_row, second_row = sorted(int(r) for r in order[repeats[0] : repeats[0] + 2])
        raise DataError(
            f"item id {ids[first_row]} is listed twice: rows {first_row} and {second_row}"
        )


def check_ids(ids: Any) -> np.ndarray:
    """Item ids as a (N,) int64 array, checked 1-d, integer and unique."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"item ids must be a 1-d array of integers, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64)
    check_unique_ids(arr)
    return arr


def text_inputs(texts: Sequence[str | None], n: int) -> tuple[list[Any], np.ndarray]:
    """Texts (None where absent or blank) and their cache keys."""
    if len(texts) != n:
        raise DataError(f"{len(texts)} texts for {n} item ids")
    payloads: list[Any] = [t if isinstance(t, str) and t.strip() else None for t in texts]
    keys = np.array([fingerprint(t) if t is not None else 0 for t in payloads], dtype=np.uint64)
    return payloads, keys


def image_inputs(
    paths: Sequence[str | Path | None], ids: np.ndarray, root: Path | None, stats: ModalityStats
) -> tuple[list[Any], np.ndarray]:
    """Absolute paths (None where absent or not found) and cache keys of N image paths."""
    n = len(ids)
    if len(paths) != n:
        raise DataError(f"{len(paths)} image paths for {n} item ids")
    payloads: list[Any] = [None] * n
    keys = np.zeros(n, dtype=np.uint64)
    for i, raw in enumerate(paths):
        if raw is None or not str(raw).strip():
            continue
        stats.named += 1
        path = Path(raw).expanduser()
        path = Path(os.path.abspath(root / path if root is not None else path))
        try:
            st = path.stat()
        except OSError:
            stats.unusable += 1
            if len(stats.examples) < 3:
                stats.examples.append(f"item {ids[i]} (row {i}): {path} (not found)")
            continue
        payloads[i] = path
        # the cache key changes when the file is replaced or edited
        keys[i] = fingerprint(f"{path}\0{st.st_size}\0{st.st_mtime_ns}")
    return payloads, keys


def load_images(
    rows: np.ndarray, ids: np.ndarray, payloads: list[Any], stats: ModalityStats
) -> tuple[np.ndarray, list[Any]]:
    """Decode the images of ``rows``: (the rows that decoded, their RGB images)."""
    try:
        from PIL import Image

        from mmctr.prepare.embed.image import open_rgb
    except ImportError as exc:
        raise missing_package("image encoding", "pillow", exc) from None
    ok, images = [], []
    for i in rows:
        try:
            images.append(open_rgb(payloads[i]))
            ok.append(i)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            stats.unusable += 1
            if len(stats.examples) < 3:
                stats.examples.append(f"item {ids[i]} (row {i}): {payloads[i]} ({exc})")
    return np.array(ok, dtype=np.int64), images
