"""The latent world rows are drawn from: item topics, popularity, quality, embeddings and tags,
and each user's start and end topic mixtures. Also writes item_info's table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from mmctr.data.layout import ITEM_SCHEMA
from mmctr.prepare.synth.preset import EMB_DIM, NUM_LEVELS, TAGS_PER_ITEM, SynthPreset

IntArray = np.ndarray[Any, np.dtype[np.int64]]
FloatArray = np.ndarray[Any, np.dtype[np.float64]]
Array = np.ndarray[Any, Any]
Gen = np.random.Generator


@dataclass
class World:
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


def make_world(p: SynthPreset, item_rng: Gen, user_rng: Gen) -> tuple[World, pa.Table]:
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
    # an item's levels: the bins that its rows' noisy likes_level / views_level are drawn around
    likes_bin, views_bin = _level_bins(quality), _level_bins(log_pop)
    ids = np.arange(p.num_items, dtype=np.int64)
    table = arrow_table([ids, tags, emb, likes_bin, views_bin], ITEM_SCHEMA)
    world = World(
        p,
        *_make_users(p, user_rng),
        topic=np.r_[0, topic].astype(np.int64),
        quality=np.r_[0.0, quality],
        pop_z=np.r_[0.0, (log_pop - log_pop.mean()) / log_pop.std()],
        views_bin=views_bin,
        likes_bin=likes_bin,
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


def arrow_table(columns: list[Array], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([_column(c) for c in columns], schema=schema)


def _column(c: Array) -> pa.Array:
    """A 2-d array becomes a list column built from flat buffers, not per-row Python objects."""
    if c.ndim == 1:
        return pa.array(c)
    offsets = np.arange(0, c.size + 1, c.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(c.ravel()))
