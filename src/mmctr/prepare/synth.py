"""Deterministic synthetic data in the MicroLens-1M MMCTR layout, with planted structure.

The signal is planted where only some models can reach it (drifting interests in the history,
topic and quality in the frozen embeddings), so a history-aware multimodal model must win.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from mmctr.data.layout import (
    ITEM_FILE,
    ITEM_SCHEMA,
    META_FILE,
    OUTPUT_FILES,
    ROW_SCHEMA,
    SPLITS,
)

TAGS_PER_ITEM = 5
EMB_DIM = 128
NUM_LEVELS = 10  # context levels 1..10; 0 means "unknown"
COUNTED = ("items", "tags", "users", "topics")
IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float64]]
Array = np.ndarray[Any, Any]
Gen = np.random.Generator


@dataclass(frozen=True)
class SynthPreset:
    num_items: int  # rows of item_info INCLUDING the padding row 0
    num_tags: int  # tag vocabulary INCLUDING padding id 0
    num_users: int
    num_train: int
    num_valid: int
    num_test: int
    num_topics: int
    seq_len: int = 100  # stored history length
    chunk_rows: int = 100_000  # rows generated and written per parquet row group
    # History length = 3 + floor(lognormal(mu, sigma)): exp(mu)=3.5 puts the median at 6 and
    # sigma=0.95 the mean near 8 while leaving a tail that reaches seq_len on big splits.
    hist_mu: float = 1.2528
    hist_sigma: float = 0.95
    pop_sigma: float = 1.6  # log-popularity spread; large -> many rare items
    interest_frac: float = 0.5  # share of targets drawn from the user's current interest
    coef_affinity: float = 5.0
    coef_quality: float = 0.5
    coef_popularity: float = 0.3
    pos_rate: float = 0.25
    emb_noise: float = 1.2  # per-dimension noise std; the topic centroid has std 1
    emb_quality: float = 2.5  # norm of the quality direction per unit of quality
    eval_rows_per_user: int = 10  # valid/test draw users from a pool this much smaller

    def __post_init__(self) -> None:
        if self.num_items < self.num_topics + 1 or self.num_tags < self.num_topics + 1:
            raise ValueError("need at least one item and one tag per topic")
        if self.seq_len < 3 or min(self.num_train, self.num_valid, self.num_test) < 1:
            raise ValueError("seq_len must be >= 3 and every split needs at least one row")


PRESETS: dict[str, SynthPreset] = {
    "tiny": SynthPreset(300, 60, 200, 3_000, 500, 500, 8),
    "demo": SynthPreset(4_000, 600, 8_000, 200_000, 20_000, 20_000, 24),
    "microlens-1m": SynthPreset(91_718, 11_740, 100_000, 3_600_000, 10_000, 379_142, 64),
}

PLANTED = (
    "Each item has one latent topic, a heavy-tailed (lognormal) popularity and a standard-normal "
    "quality q. item_emb_d128 = topic centroid + q * quality direction + Gaussian noise "
    "(float32). Tags come mostly from a block owned by the item's topic, some are random, some "
    "items have none. Each user has a start and an end topic mixture (2-3 dominant topics plus "
    "background); history item at relative position t is drawn from (1-t)*start + t*end, items "
    "within a topic by popularity. Targets come from the end mixture (interest_frac) or from "
    "global popularity. P(click) = sigmoid(coef_affinity * end_mixture[target topic] + "
    "coef_quality * q + coef_popularity * z(log popularity) + bias), bias calibrated to "
    "pos_rate. views_level / likes_level are noisy decile bins of popularity / quality."
)


@dataclass
class _World:
    """Everything about items and users that rows are drawn from."""

    p: SynthPreset
    dom: IntArray  # (users, start/end, 3) dominant topics
    dom_w: FloatArray  # (users, start/end, 3) their weights
    background: FloatArray  # per user: mass spread uniformly over all topics
    activity_cum: FloatArray  # cumulative user activity, for drawing train rows
    topic: IntArray  # per item id (index 0 = padding, never drawn)
    quality: FloatArray
    pop_z: FloatArray  # standardised log-popularity
    views_bin: IntArray
    likes_bin: IntArray
    global_cum: FloatArray  # cumulative popularity over items 1..N-1
    topic_order: IntArray  # item ids sorted by topic
    topic_cum: FloatArray  # topic k's block holds k + within-topic cumulative popularity
    topic_end: IntArray  # exclusive end of each topic's block in topic_order
    bias: float = 0.0


def _level_bins(values: FloatArray) -> IntArray:
    # Rank-based deciles keep all ten levels populated whatever the value distribution.
    ranks = np.argsort(np.argsort(values, kind="stable"), kind="stable")
    return np.r_[0, 1 + (ranks * NUM_LEVELS) // len(values)].astype(np.int64)


def _make_world(p: SynthPreset, item_rng: Gen, user_rng: Gen) -> tuple[_World, pa.Table]:
    n, k, rng = p.num_items - 1, p.num_topics, item_rng
    # Every topic gets at least one item; the rest follow uneven topic sizes.
    sizes = rng.dirichlet(np.full(k, 2.0))
    topic = rng.permutation(np.r_[np.arange(k), rng.choice(k, size=n - k, p=sizes)])
    quality = rng.standard_normal(n)
    log_pop = p.pop_sigma * rng.standard_normal(n)
    pop = np.exp(log_pop - log_pop.max())

    order = np.argsort(topic, kind="stable")
    topic_end = np.searchsorted(topic[order], np.arange(k), side="right")
    counts = np.diff(np.r_[0, topic_end])
    cum = np.cumsum(pop[order])
    before = np.r_[0.0, cum][topic_end - counts]  # popularity mass of all earlier topics
    within = (cum - np.repeat(before, counts)) / np.repeat(cum[topic_end - 1] - before, counts)
    topic_cum = topic[order] + within
    topic_cum[topic_end - 1] = np.arange(1, k + 1)  # exact block ends so rounding cannot leak
    global_cum = np.cumsum(pop) / pop.sum()
    global_cum[-1] = 1.0

    tags = np.vstack([np.zeros((1, TAGS_PER_ITEM), np.int64), _make_tags(p, topic, rng)])
    emb = np.vstack([np.zeros((1, EMB_DIM), np.float32), _make_emb(p, topic, quality, rng)])
    table = _table([np.arange(p.num_items, dtype=np.int64), tags, emb], ITEM_SCHEMA)
    world = _World(
        p,
        *_make_users(p, user_rng),
        topic=np.r_[0, topic].astype(np.int64),
        quality=np.r_[0.0, quality],
        pop_z=np.r_[0.0, (log_pop - log_pop.mean()) / log_pop.std()],
        views_bin=_level_bins(log_pop),
        likes_bin=_level_bins(quality),
        global_cum=global_cum,
        topic_order=(order + 1).astype(np.int64),
        topic_cum=topic_cum,
        topic_end=topic_end.astype(np.int64),
    )
    return world, table


def _make_emb(p: SynthPreset, topic: IntArray, quality: FloatArray, rng: Gen) -> Array:
    f32 = np.float32
    centroids = rng.standard_normal((p.num_topics, EMB_DIM), dtype=f32)
    qdir = rng.standard_normal(EMB_DIM, dtype=f32)
    qdir *= f32(p.emb_quality) / np.linalg.norm(qdir)
    emb = rng.standard_normal((len(topic), EMB_DIM), dtype=f32) * f32(p.emb_noise)
    emb += centroids[topic]
    emb += quality.astype(f32)[:, None] * qdir[None, :]
    # Unit per-dimension variance keeps the raw embedding on a scale models can consume as is.
    emb *= f32(1.0 / np.sqrt(1.0 + p.emb_noise**2 + p.emb_quality**2 / EMB_DIM))
    return emb


def _make_tags(p: SynthPreset, topic: IntArray, rng: Gen) -> IntArray:
    n, k = len(topic), p.num_topics
    bounds = np.linspace(1, p.num_tags, k + 1).astype(np.int64)  # topic k owns [b_k, b_k+1)
    lo, width = bounds[topic], np.diff(bounds)[topic]
    # Squaring a uniform skews each block toward its first tags, like real tag popularity.
    own = lo[:, None] + (width[:, None] * rng.random((n, TAGS_PER_ITEM)) ** 2).astype(np.int64)
    noise = rng.integers(1, p.num_tags, size=(n, TAGS_PER_ITEM))
    tags = np.where(rng.random((n, TAGS_PER_ITEM)) < 0.85, own, noise)
    count = rng.choice(6, size=n, p=[0.08, 0.18, 0.22, 0.22, 0.15, 0.15])
    tags[np.arange(TAGS_PER_ITEM)[None, :] >= count[:, None]] = 0
    tags.sort(axis=1)
    tags[:, 1:][tags[:, 1:] == tags[:, :-1]] = 0  # drop duplicate tags within an item
    tags.sort(axis=1)  # zeros first = left padding
    if not (tags == p.num_tags - 1).any():
        # Readers infer the vocabulary from the data, so the largest id must appear somewhere.
        cand = np.flatnonzero((topic == k - 1) & (tags[:, -1] > 0))
        tags[int(cand[0]) if len(cand) else 0, -1] = p.num_tags - 1
    return tags


def _make_users(p: SynthPreset, rng: Gen) -> tuple[IntArray, FloatArray, FloatArray, FloatArray]:
    u, k = p.num_users, p.num_topics
    perm = np.argsort(rng.random((u, k)), axis=1)[:, :4]
    # Drift: most users pick up a new favourite topic and drop their third; weights re-drawn.
    end = np.where((rng.random(u) < 0.7)[:, None], perm[:, [3, 0, 1]], perm[:, :3])
    w = rng.gamma(1.0, size=(u, 2, 3))
    w[..., 2] *= rng.random((u, 2)) < 0.6  # 2 or 3 dominant topics
    act = np.exp(0.5 * rng.standard_normal(u))
    act_cum = np.cumsum(act) / act.sum()
    act_cum[-1] = 1.0
    dom = np.stack([perm[:, :3], end], axis=1).astype(np.int64)
    return dom, w / w.sum(axis=2, keepdims=True), rng.uniform(0.05, 0.2, size=u), act_cum


def _sample_topics(w: _World, users: IntArray, which: IntArray, rng: Gen) -> IntArray:
    """Topic from mixture ``which`` (0 start, 1 end) of each user."""
    cum = np.cumsum(w.dom_w[users, which], axis=1)
    slot = np.minimum((cum < rng.random(len(users))[:, None]).sum(axis=1), 2)
    bg = rng.random(len(users)) < w.background[users]
    rand = rng.integers(0, w.p.num_topics, size=len(users))
    return np.where(bg, rand, w.dom[users, which, slot])


def _sample_in_topic(w: _World, topics: IntArray, rng: Gen) -> IntArray:
    pos = np.searchsorted(w.topic_cum, topics + rng.random(len(topics)), side="right")
    return w.topic_order[np.minimum(pos, w.topic_end[topics] - 1)]


def _affinity(w: _World, users: IntArray, topics: IntArray) -> FloatArray:
    """Weight of each target topic in the user's end mixture."""
    hit = w.dom[users, 1] == topics[:, None]
    bg = w.background[users]
    return (1.0 - bg) * (w.dom_w[users, 1] * hit).sum(axis=1) + bg / w.p.num_topics


def _targets(w: _World, users: IntArray, rng: Gen) -> tuple[IntArray, FloatArray]:
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


def _calibrate_bias(w: _World, rng: Gen) -> float:
    # A fixed-size sample of its own keeps the bias independent of chunking and split sizes.
    _, logit = _targets(w, _draw_users(w, None, 50_000, rng), rng)
    lo, hi = -30.0, 30.0
    for _ in range(80):
        mid = (lo + hi) / 2
        rate = float(np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))))
        lo, hi = (mid, hi) if rate < w.p.pos_rate else (lo, mid)
    return (lo + hi) / 2


def _draw_users(w: _World, pool: IntArray | None, n: int, rng: Gen) -> IntArray:
    """Users of ``n`` rows: by activity over everyone, or uniformly from an eval pool."""
    if pool is not None:
        return pool[rng.integers(0, len(pool), size=n)]
    pos = np.searchsorted(w.activity_cum, rng.random(n), side="right")
    return np.minimum(pos, w.p.num_users - 1).astype(np.int64)


def _noisy_level(bins: IntArray, rng: Gen) -> IntArray:
    step = rng.choice(np.array([-1, 0, 1]), size=len(bins), p=[0.15, 0.7, 0.15])
    out = np.clip(bins + step, 1, NUM_LEVELS)
    return np.where(rng.random(len(bins)) < 0.02, 0, out)


def _table(columns: list[Array], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([_column(c) for c in columns], schema=schema)


def _column(c: Array) -> pa.Array:
    """A 2-d array becomes a list column built from flat buffers, not per-row Python objects."""
    if c.ndim == 1:
        return pa.array(c)
    offsets = np.arange(0, c.size + 1, c.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(c.ravel()))


def _build_chunk(w: _World, users: IntArray, rng: Gen) -> tuple[pa.Table, IntArray]:
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
    return _table([users, seq, items, likes, views, label], ROW_SCHEMA), lengths


def _write_split(path: Path, w: _World, split: str, rng: Gen, bar: Any) -> tuple[float, IntArray]:
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
            table, lengths = _build_chunk(w, _draw_users(w, pool, size, rng), rng)
            writer.write_table(table, row_group_size=w.p.chunk_rows)
            positives += float(np.sum(table.column("label").to_numpy()))
            hist += np.bincount(lengths, minlength=w.p.seq_len + 1)
            bar.update(size)
    return positives, hist


def _length_stats(hist: IntArray) -> dict[str, float]:
    used, cum = np.flatnonzero(hist), np.cumsum(hist)
    # Lower median; the splits are large enough that both middle values virtually always agree.
    median = int(np.searchsorted(cum, (int(cum[-1]) + 1) // 2))
    mean = float((np.arange(len(hist)) * hist).sum() / cum[-1])
    return {"min": int(used[0]), "median": median, "mean": round(mean, 4), "max": int(used[-1])}


def generate(
    out_dir: str | Path,
    preset: str | SynthPreset = "demo",
    *,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a synthetic MMCTR data set into ``out_dir``; returns the dataset.json content.

    Same preset and seed give byte-identical files. Files appear only once all are complete.
    """
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    name, p = ("custom", preset) if isinstance(preset, SynthPreset) else (preset, PRESETS[preset])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        for fname in (*OUTPUT_FILES, META_FILE):
            if (out / fname).exists():
                raise FileExistsError(
                    f"{out / fname} already exists; pass overwrite=True (CLI: --force) to replace"
                )
    tmp = Path(tempfile.mkdtemp(prefix=".synth-tmp-", dir=out))
    try:
        meta = _fill(tmp, name, p, seed, progress)
        for fname in (*OUTPUT_FILES, META_FILE):
            os.replace(tmp / fname, out / fname)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _fill(tmp: Path, name: str, p: SynthPreset, seed: int, progress: bool) -> dict[str, Any]:
    item_rng, user_rng, calib_rng, *split_rngs = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )
    world, items = _make_world(p, item_rng, user_rng)
    pq.write_table(items, tmp / ITEM_FILE, row_group_size=100_000, compression="zstd")
    del items
    world.bias = _calibrate_bias(world, calib_rng)
    sizes = {split: getattr(p, f"num_{split}") for split in SPLITS}
    rates, stats, total_hist = {}, {}, np.zeros(p.seq_len + 1, np.int64)
    total = sum(sizes.values())
    with tqdm(total=total, unit="row", disable=not progress, desc=f"synth {name}") as bar:
        for split, rng in zip(SPLITS, split_rngs, strict=True):
            positives, hist = _write_split(tmp / f"{split}.parquet", world, split, rng, bar)
            rates[split] = round(positives / sizes[split], 6)
            stats[split] = _length_stats(hist)
            total_hist += hist
    meta: dict[str, Any] = {
        "format": "microlens-1m-mmctr (synthetic)",
        "preset": name,
        "seed": seed,
        "params": asdict(p),
        "counts": {**{k: getattr(p, f"num_{k}") for k in COUNTED}, "rows": sizes},
        "positive_rate": rates,
        "history_length": {**_length_stats(total_hist), "per_split": stats},
        "bias": round(world.bias, 6),
        "planted": PLANTED,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
