"""Items -> raw encoder outputs (batched, cached) -> PCA -> one fixed-width vector per item.

Missing inputs: an item whose text is None / empty, or whose image path is None / empty, does
not exist or cannot be decoded, gets a zero block for that modality in the PCA input, so every
item still gets a vector. Images that were named but unusable are counted and reported in one
warning rather than stopping the run. The PCA is fitted on all items, those with a missing
block included.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from mmctr.errors import ConfigError, DataError
from mmctr.prepare.embed import encoders
from mmctr.prepare.embed.cache import EncodingCache
from mmctr.prepare.embed.encoders import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    Encoder,
)
from mmctr.prepare.embed.inputs import (
    ModalityStats,
    check_ids,
    image_inputs,
    load_images,
    text_inputs,
)
from mmctr.prepare.embed.pca import FittedPCA, check_dim, fit_pca, pca_input

FLUSH_SECONDS = 120.0  # rewrite the cache at most this often during a long encode


@dataclass
class RawEmbeddings:
    """Raw encoder outputs for N items; a zero row where an item lacks the modality."""

    text: np.ndarray | None  # (N, D_text) float32, None when the text modality is not used
    image: np.ndarray | None  # (N, D_image) float32, None when the image modality is not used
    modalities: tuple[tuple[str, str, int], ...]  # (modality, encoder name, width), block order
    stats: dict[str, ModalityStats]


@dataclass
class _Job:
    """One modality to encode: its encoder and, per item, the input (None: none) and its key."""

    modality: str
    encoder: Encoder
    payloads: list[Any]
    keys: np.ndarray  # (N,) fingerprints of the inputs, for the cache
    stats: ModalityStats


def _jobs(
    ids: np.ndarray,
    texts: Sequence[str | None] | None,
    image_paths: Sequence[str | Path | None] | None,
    *,
    text_encoder: str | Encoder,
    image_encoder: str | Encoder,
    allow_download: bool,
    image_root: str | Path | None,
) -> list[_Job]:
    """The modalities in use, in block order, each with its resolved encoder and inputs."""
    jobs: list[_Job] = []
    if texts is not None:
        stats = ModalityStats()
        payloads, keys = text_inputs(texts, len(ids))
        encoder = encoders.text_encoder(text_encoder, allow_download=allow_download)
        jobs.append(_Job("text", encoder, payloads, keys, stats))
    if image_paths is not None:
        stats = ModalityStats()
        root = None if image_root is None else Path(image_root)
        payloads, keys = image_inputs(image_paths, ids, root, stats)
        encoder = encoders.image_encoder(image_encoder, allow_download=allow_download)
        jobs.append(_Job("image", encoder, payloads, keys, stats))
    return jobs


def _encode_modality(
    job: _Job, ids: np.ndarray, *, cache_dir: str | Path | None, batch_size: int, show: bool
) -> np.ndarray:
    """(N, D) float32 raw vectors of one modality, zero rows where the item lacks it."""
    stats = job.stats
    present = np.flatnonzero([p is not None for p in job.payloads])
    if job.modality == "text":
        stats.named = len(present)
    cache = EncodingCache(cache_dir, job.modality, job.encoder.name)
    hit, rows = cache.lookup(ids[present], job.keys[present])
    stats.cached = int(hit.sum())
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    if stats.cached:
        parts.append((present[hit], cache.vectors(rows[hit])))
    todo = present[~hit]
    if job.modality == "text":  # similar lengths per batch: less padding for the transformer
        todo = todo[np.argsort([-len(job.payloads[i]) for i in todo], kind="stable")]
    _encode_batches(job, ids, todo, cache, parts, batch_size=batch_size, show=show)
    if not parts:
        raise DataError(
            f"no item has a usable {job.modality} ({stats.named} of {len(ids)} named one"
            + (f", {stats.unusable} unusable, e.g. {stats.examples[0]}" if stats.unusable else "")
            + ")"
        )
    raw = np.zeros((len(ids), parts[0][1].shape[1]), dtype=np.float32)
    for where, vectors in parts:
        raw[where] = vectors
    return raw


def _encode_batches(
    job: _Job,
    ids: np.ndarray,
    todo: np.ndarray,
    cache: EncodingCache,
    parts: list[tuple[np.ndarray, np.ndarray]],
    *,
    batch_size: int,
    show: bool,
) -> None:
    """Encode the items ``todo`` in batches, adding ``(rows, vectors)`` to ``parts`` and to the
    cache, which is written every ``FLUSH_SECONDS`` and at the end, also when interrupted."""
    last_flush = time.monotonic()
    bar = tqdm(
        total=len(todo),
        desc=f"{job.modality} {job.encoder.name}",
        unit="item",
        disable=not show,
        file=sys.stderr,
    )
    try:
        for start in range(0, len(todo), batch_size):
            chunk = todo[start : start + batch_size]
            if job.modality == "image":
                chunk, batch = load_images(chunk, ids, job.payloads, job.stats)
            else:
                batch = [job.payloads[i] for i in chunk]
            if len(chunk):
                vectors = np.asarray(job.encoder.encode(batch), dtype=np.float32)
                _check_output(job.encoder, vectors, len(chunk), parts, cache)
                parts.append((chunk, vectors))
                cache.add(ids[chunk], job.keys[chunk], vectors)
                job.stats.encoded += len(chunk)
            bar.update(min(batch_size, len(todo) - start))
            if time.monotonic() - last_flush > FLUSH_SECONDS:
                cache.flush()
                last_flush = time.monotonic()
    finally:
        bar.close()
        cache.flush()  # keep what was encoded, also when interrupted


def _check_output(
    encoder: Encoder,
    vectors: np.ndarray,
    rows: int,
    parts: list[tuple[np.ndarray, np.ndarray]],
    cache: EncodingCache,
) -> None:
    if vectors.ndim != 2 or vectors.shape[0] != rows:
        raise ConfigError(
            f"encoder {encoder.name!r} returned shape {vectors.shape} for {rows} inputs"
        )
    if parts and vectors.shape[1] != parts[0][1].shape[1]:
        raise ConfigError(
            f"encoder {encoder.name!r} gives {vectors.shape[1]}-d vectors, earlier ones (cached "
            f"in {cache.path}) are {parts[0][1].shape[1]}-d; delete that cache file"
        )


def encode_items(
    ids: np.ndarray,
    texts: Sequence[str | None] | None,
    image_paths: Sequence[str | Path | None] | None,
    *,
    text_encoder: str | Encoder = DEFAULT_TEXT_ENCODER,
    image_encoder: str | Encoder = DEFAULT_IMAGE_ENCODER,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool | None = None,
    allow_download: bool = False,
    image_root: str | Path | None = None,
) -> RawEmbeddings:
    """Raw encoder outputs of every item and modality in use (see ``embed_items``)."""
    if texts is None and image_paths is None:
        raise ConfigError("no modality selected: give texts and/or image paths")
    if batch_size < 1:
        raise ConfigError(f"batch size must be >= 1, got {batch_size}")
    ids = check_ids(ids)
    show = bool(getattr(sys.stderr, "isatty", lambda: False)()) if progress is None else progress
    jobs = _jobs(
        ids,
        texts,
        image_paths,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        allow_download=allow_download,
        image_root=image_root,
    )
    out: dict[str, np.ndarray | None] = {"text": None, "image": None}
    modalities: list[tuple[str, str, int]] = []
    for job in jobs:
        raw = _encode_modality(job, ids, cache_dir=cache_dir, batch_size=batch_size, show=show)
        out[job.modality] = raw
        modalities.append((job.modality, job.encoder.name, int(raw.shape[1])))
    stats = {job.modality: job.stats for job in jobs}
    image_stats = stats.get("image")
    if image_stats is not None and image_stats.unusable:
        warnings.warn(
            f"{image_stats.unusable} of {image_stats.named} images could not be used and count "
            f"as 'no image': {'; '.join(image_stats.examples)}",
            stacklevel=2,
        )
    return RawEmbeddings(out["text"], out["image"], tuple(modalities), stats)


def embed_items(
    ids: np.ndarray,
    texts: Sequence[str | None] | None,
    image_paths: Sequence[str | Path | None] | None,
    *,
    dim: int = 128,
    whiten: bool = False,
    text_encoder: str | Encoder = DEFAULT_TEXT_ENCODER,
    image_encoder: str | Encoder = DEFAULT_IMAGE_ENCODER,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    progress: bool | None = None,
    allow_download: bool = False,
    image_root: str | Path | None = None,
) -> tuple[np.ndarray, FittedPCA]:
    """Embed N items into ``dim`` dimensions: returns ((N, dim) float32, the fitted PCA).

    ``ids``: (N,) unique integer item ids (they key the cache). ``texts``: N strings or None
    per item, or None for no text modality. ``image_paths``: N paths or None per item (relative
    ones are taken from ``image_root`` when given), or None for no image modality. Each
    modality's raw vectors are L2-normalised, concatenated (zero block when an item lacks it)
    and reduced by PCA, optionally whitened. ``cache_dir``: where raw vectors are kept between
    runs (None: no cache). Encoders are names (see ``text_encoder``/``image_encoder`` in
    ``mmctr.prepare.embed.encoders``) or objects with ``name`` and ``encode``. Row i of the
    result is item ``ids[i]``, and equals ``pca.project(raw_text, raw_image)[i]``.
    """
    check_dim(dim, len(ids))  # before the slow part; the input width is checked by the fit
    raw = encode_items(
        ids,
        texts,
        image_paths,
        text_encoder=text_encoder,
        image_encoder=image_encoder,
        cache_dir=cache_dir,
        batch_size=batch_size,
        progress=progress,
        allow_download=allow_download,
        image_root=image_root,
    )
    return reduce(raw, dim, whiten=whiten)


def reduce(raw: RawEmbeddings, dim: int, *, whiten: bool = False) -> tuple[np.ndarray, FittedPCA]:
    """Fit the PCA on ``raw`` and project it: ((N, dim) float32, FittedPCA)."""
    x = pca_input(raw.modalities, {"text": raw.text, "image": raw.image})
    pca = fit_pca(x, dim, whiten=whiten, modalities=raw.modalities)
    return pca.transform(x), pca
