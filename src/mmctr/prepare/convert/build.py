"""From the sorted log to the data files: the split in time, levels, negatives, the item files
and the rows of each split, and the description of all of it that dataset.json keeps.

Every random draw comes from ``options.seed`` in a fixed order (negatives, then the slot of
each positive among its negatives), so the same inputs and options write the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmctr.data.layout import META_FILE, SPLITS
from mmctr.errors import DataError
from mmctr.prepare.convert import write as cw
from mmctr.prepare.convert.cold import ColdItems, hold_out_items, train_period
from mmctr.prepare.convert.emb import compute_item_emb, read_item_emb
from mmctr.prepare.convert.io import Items
from mmctr.prepare.convert.levels import LIKES_DEF, VIEWS_DEF, likes_levels, views_levels
from mmctr.prepare.convert.negatives import sample_negatives
from mmctr.prepare.convert.options import ConvertOptions
from mmctr.prepare.convert.tags import item_tags

Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class _Draws:
    """The rows to write and their sampled negatives."""

    positives: Array  # (P,) indices into the log of the events that become rows
    negatives: Array  # (P, negatives) item ids
    pool: Array  # items the negatives are drawn from
    weights: Array | None  # train-period counts over ``pool`` ("popularity"); None = uniform
    slot_rng: np.random.Generator  # places each positive among its negatives


def build(
    tmp: Path, log: cw.SortedLog, items: Items, opts: ConvertOptions, show: bool
) -> dict[str, Any]:
    """Write every data file into ``tmp``; returns dataset.json's content but for the source."""
    num_items = len(items.ids) + 1
    cold = None
    if opts.cold_items > 0:
        log, cold = hold_out_items(log, opts.cold_items, opts.seed, num_items)
    num_users = len(log.user_names) + 1
    role, period = _roles(log)
    t_users, t_items = log.users[period], log.items[period]
    views, train_counts = views_levels(t_items, num_items)
    likes = likes_levels(t_users, t_items, num_users, num_items)
    draws = _draw_negatives(log, role, train_counts, opts, num_items, cold)
    # the embedding may take minutes to compute, so every cheap check above runs first
    if opts.item_emb is not None:
        emb, emb_info = read_item_emb(opts.item_emb, opts.item_emb_id_col, items)
    else:
        emb, emb_info = compute_item_emb(items, tmp, _embed_options(opts), show)
    tags, vocab, tag_info = item_tags(items, opts.min_tag_count, opts.tags_per_item)
    cw.write_tag_vocab(tmp, vocab)
    cw.write_item_info(tmp, tags, emb, (likes, views))  # every item's levels, for item features
    cw.write_maps(tmp, items.ids, log.user_names)
    rows, rates, lengths = _write_splits(tmp, log, role, draws, (likes, views), opts, show)
    meta = {
        "format": "microlens-1m-mmctr (converted from an interaction log)",
        "seed": opts.seed,
        "options": asdict(opts),
        "counts": {
            "users": num_users - 1,
            "items": num_items - 1,
            "items_without_interactions": int(num_items - 1 - len(draws.pool)),
            "interactions": len(log.items),
            "first_interactions_history_only": int((role == -1).sum()),
            "tags": tag_info["vocab_size"],
            "rows": rows,
        },
        "positive_rate": rates,
        "history_length": lengths,
        "split": (
            "per user in time order: last interaction -> test, second to last -> valid, every "
            "earlier one with a non-empty history -> train (the first is history only); history "
            f"= up to {opts.max_len} previous items, left-padded with 0, most recent last"
        ),
        "negatives": _negatives_info(draws, opts),
        "levels": _levels_info(views, likes),
        "tags": tag_info,
        "embedding": emb_info,
        "files": [*sorted(os.listdir(tmp)), META_FILE],
    }
    if cold is not None:
        meta["cold_items"] = {**cold.info, "ids": items.ids[cold.items - 1].tolist()}
    return meta


def _roles(log: cw.SortedLog) -> tuple[Array, Array]:
    """Each event's row: -1 history only (a user's first), 0 train, 1 valid, 2 test; and which
    events fall in the train period (all but each user's last two)."""
    last = log.length[log.users]
    period = train_period(log)
    role = np.full(len(log.pos), -1, dtype=np.int64)  # -1: first event, history only
    role[(log.pos >= 1) & period] = 0
    role[log.pos == last - 2] = 1
    role[log.pos == last - 1] = 2
    if not (role == 0).any():
        raise DataError(
            "no train rows: every kept user has exactly 3 interactions, which give only a "
            "history, a valid and a test row; a train row needs a 4th"
        )
    return role, period


def _draw_negatives(
    log: cw.SortedLog,
    role: Array,
    train_counts: Array,
    opts: ConvertOptions,
    num_items: int,
    cold: ColdItems | None,
) -> _Draws:
    """Negatives for every row, never an item its user touched anywhere in the log (held-out
    interactions included); train rows' negatives are never held-out items."""
    pool = np.unique(log.items)
    weights = train_counts[pool].astype(np.float64) if opts.sampling == "popularity" else None
    touched = np.unique(log.users * np.int64(num_items) + log.items)
    if cold is not None:
        touched = np.union1d(touched, cold.touched)
    positives = np.flatnonzero(role >= 0)
    neg_rng, slot_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(opts.seed).spawn(2)
    )
    names = np.r_[np.array([None], dtype=object), log.user_names.astype(object)]

    def draw(users: Array, pool: Array, weights: Array | None) -> Array:
        return sample_negatives(
            users, touched, pool, weights, opts.negatives, num_items, neg_rng, user_names=names
        )

    negatives = draw(log.users[positives], pool, weights)
    if cold is not None:  # train rows again, from the warm items only
        # (a redraw rather than one draw per pool: the data sets of docs/beyond.md's held-out
        # runs were written this way, and the same options must keep giving the same bytes)
        train = role[positives] == 0
        warm = ~np.isin(pool, cold.items)
        negatives[train] = draw(
            log.users[positives[train]], pool[warm], None if weights is None else weights[warm]
        )
    return _Draws(positives, negatives, pool, weights, slot_rng)


def _write_splits(
    tmp: Path,
    log: cw.SortedLog,
    role: Array,
    draws: _Draws,
    levels: tuple[Array, Array],
    opts: ConvertOptions,
    show: bool,
) -> tuple[dict[str, int], dict[str, float], dict[str, dict[str, float]]]:
    """Write train, valid and test; returns rows, positive rate and history lengths of each."""
    rows, rates, lengths = {}, {}, {}
    with cw.progress_bar(len(draws.positives) * (opts.negatives + 1), show) as bar:
        for r, split in enumerate(SPLITS):
            sel = role[draws.positives] == r
            g = draws.positives[sel]
            written, pos_rate = cw.write_split(
                tmp / f"{split}.parquet",
                g,
                draws.negatives[sel],
                log,
                levels,
                opts.max_len,
                draws.slot_rng,
                bar,
            )
            rows[split], rates[split] = written, pos_rate
            lengths[split] = cw.length_stats(np.minimum(log.pos[g], opts.max_len))
    return rows, rates, lengths


def _negatives_info(draws: _Draws, opts: ConvertOptions) -> dict[str, Any]:
    weights = draws.weights
    return {
        "per_positive": opts.negatives,
        "sampling": opts.sampling,
        "pool": (
            "items in the kept users' logs"
            + (" with a train-period interaction" if weights is not None else "")
        ),
        "rule": (
            "never an item the user interacted with anywhere in their log; distinct within a "
            "positive's group; each group shares the positive's user and history, and the "
            "positive's slot among its negatives is random"
        ),
        "pool_size": int(len(draws.pool) if weights is None else (weights > 0).sum()),
    }


def _levels_info(views: Array, likes: Array) -> dict[str, Any]:
    return {
        "period": "train period: every interaction but each user's last two",
        "views_level": VIEWS_DEF,
        "likes_level": LIKES_DEF,
        "items_per_views_level": np.bincount(views[1:], minlength=11).tolist(),
        "items_per_likes_level": np.bincount(likes[1:], minlength=11).tolist(),
    }


def _embed_options(opts: ConvertOptions) -> dict[str, Any]:
    """embed_items' keyword arguments."""
    return {
        "whiten": opts.whiten,
        "text_encoder": opts.text_encoder,
        "image_encoder": opts.image_encoder,
        "cache_dir": opts.embed_cache,
        "batch_size": opts.embed_batch_size,
    }
