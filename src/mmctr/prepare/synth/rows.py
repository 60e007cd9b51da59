"""Rows of the splits: histories drifting from a user's start to end mixture, targets, labels
from the planted click model, noisy levels; streamed to parquet chunk by chunk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmctr.data.layout import ROW_SCHEMA
from mmctr.prepare.synth.preset import NUM_LEVELS
from mmctr.prepare.synth.world import FloatArray, Gen, IntArray, World, arrow_table


def _sample_topics(w: World, users: IntArray, which: IntArray, rng: Gen) -> IntArray:
    """Topic from mixture ``which`` (0 start, 1 end) of each user."""
    cum = np.cumsum(w.dom_w[users, which], axis=1)
    slot = np.minimum((cum < rng.random(len(users))[:, None]).sum(axis=1), 2)
    bg = rng.random(len(users)) < w.background[users]
    rand = rng.integers(0, w.p.num_topics, size=len(users))
    return np.where(bg, rand, w.dom[users, which, slot])


def _sample_in_topic(w: World, topics: IntArray, rng: Gen) -> IntArray:
    pos = np.searchsorted(w.topic_cum, topics + rng.random(len(topics)), side="right")
    return w.topic_order[np.minimum(pos, w.topic_end[topics] - 1)]


def _affinity(w: World, users: IntArray, topics: IntArray) -> FloatArray:
    """Weight of each target topic in the user's end mixture."""
    hit = w.dom[users, 1] == topics[:, None]
    bg = w.background[users]
    return (1.0 - bg) * (w.dom_w[users, 1] * hit).sum(axis=1) + bg / w.p.num_topics


def _targets(w: World, users: IntArray, rng: Gen) -> tuple[IntArray, FloatArray]:
    """Target items and their click logits before the bias."""
    n, p = len(users), w.p
    own = _sample_in_topic(w, _sample_topics(w, users, np.ones(n, np.int64), rng), rng)
    popular = 1 + np.minimum(
        np.searchsorted(w.global_cum, rng.random(n), side="right"), p.num_items - 2
    )
    items = np.where(rng.random(n) < p.interest_frac, own, popular)
    logit = (
        p.coef_affinity * _affinity(w, users, w.topic[items])
        + p.coef_quality * w.quality[items]
        + p.coef_popularity * w.pop_z[items]
    )
    return items, logit


def calibrate_bias(w: World, rng: Gen) -> float:
    # A fixed-size sample of its own keeps the bias independent of chunking and split sizes.
    _, logit = _targets(w, _draw_users(w, None, 50_000, rng), rng)
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))))
        lo, hi = (mid, hi) if rate < w.p.pos_rate else (lo, mid)
    return (lo + hi) / 2


def _draw_users(w: World, pool: IntArray | None, n: int, rng: Gen) -> IntArray:
    """Users of ``n`` rows: by activity over everyone, or uniformly from an eval pool."""
    if pool is not None:
        return pool[rng.integers(0, len(pool), size=n)]
    pos = np.searchsorted(w.activity_cum, rng.random(n), side="right")
    return np.minimum(pos, w.p.num_users - 1).astype(np.int64)


def _noisy_level(bins: IntArray, rng: Gen) -> IntArray:
    step = rng.choice(np.array([-1, 0, 1]), size=len(bins), p=[0.15, 0.7, 0.15])
    out = np.clip(bins + step, 1, NUM_LEVELS)
    return np.where(rng.random(len(bins)) < 0.02, 0, out)


def build_chunk(w: World, users: IntArray, rng: Gen) -> tuple[pa.Table, IntArray]:
    """One chunk of rows; also returns the history lengths for the stats."""
    n, s = len(users), w.p.seq_len
    raw = np.floor(rng.lognormal(w.p.hist_mu, w.p.hist_sigma, size=n))
    lengths = (3 + np.minimum(raw, s - 3)).astype(np.int64)
    row = np.repeat(np.arange(n), lengths)
    pos = np.arange(len(row)) - (np.cumsum(lengths) - lengths)[row]
    # Later positions lean on the end mixture: that is where the drift becomes visible.
    use_end = (rng.random(len(row)) < pos / (lengths[row] - 1)).astype(np.int64)
    seq = np.zeros((n, s), np.int64)
    seq[row, s - lengths[row] + pos] = _sample_in_topic(
        w, _sample_topics(w, users[row], use_end, rng), rng
    )
    items, logit = _targets(w, users, rng)
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-(logit + w.bias)))).astype(np.float64)
    likes, views = _noisy_level(w.likes_bin[items], rng), _noisy_level(w.views_bin[items], rng)
    return arrow_table([users, seq, items, likes, views, label], ROW_SCHEMA), lengths


def write_split(path: Path, w: World, split: str, rng: Gen, bar: Any) -> tuple[float, IntArray]:
    """Stream one split to parquet; returns its positive count and history-length histogram."""
    n: int = getattr(w.p, f"num_{split}")
    positives, hist = 0.0, np.zeros(w.p.seq_len + 1, np.int64)
    # Eval rows come from a smaller user pool so each user has several rows for per-user AUC.
    size = max(1, min(w.p.num_users, n // w.p.eval_rows_per_user))
    pool = (
        np.sort(rng.choice(w.p.num_users, size=size, replace=False)) if split != "train" else None
    )
    with pq.ParquetWriter(path, ROW_SCHEMA, compression="zstd") as writer:
        for lo in range(0, n, w.p.chunk_rows):
            size = min(w.p.chunk_rows, n - lo)
            table, lengths = build_chunk(w, _draw_users(w, pool, size, rng), rng)
            writer.write_table(table, row_group_size=w.p.chunk_rows)
            positives += float(np.sum(table.column("label").to_numpy()))
            hist += np.bincount(lengths, minlength=w.p.seq_len + 1)
            bar.update(size)
    return positives, hist


def length_stats(hist: IntArray) -> dict[str, float]:
    used, cum = np.flatnonzero(hist), np.cumsum(hist)
    # Lower median; the splits are large enough that both middle values virtually always agree.
    median = int(np.searchsorted(cum, (int(cum[-1]) + 1) // 2))
    mean = float((np.arange(len(hist)) * hist).sum() / cum[-1])
    return {"min": int(used[0]), "median": median, "mean": round(mean, 4), "max": int(used[-1])}
