"""Turn an interaction log and an item catalogue into the challenge layout (SPEC section 1).

The flow: re-index items (sorted original ids -> 1..N, 0 = padding) and users, order each
user's events, split them in time (last -> test, second to last -> valid, earlier positions with
a history -> train), compute levels from the train period only, sample negatives, and write
every file into a temporary folder that replaces ``out`` only once all of it is complete.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmctr.data.layout import SPLITS
from mmctr.errors import ConfigError, DataError
from mmctr.prepare.convert import write as cw
from mmctr.prepare.convert.emb import PCA_FILE, compute_item_emb, read_item_emb
from mmctr.prepare.convert.io import Events, Items, duplicate_check, show, where
from mmctr.prepare.convert.levels import LIKES_DEF, VIEWS_DEF, likes_levels, views_levels
from mmctr.prepare.convert.negatives import sample_negatives
from mmctr.prepare.convert.tags import item_tags

MIN_EVENTS = 3  # one train-period event (the first train row's history), valid and test
SAMPLINGS = ("uniform", "popularity")
META_FILE = "dataset.json"
OUTPUT_FILES = (
    "train.parquet",
    "valid.parquet",
    "test.parquet",
    "item_info.parquet",
    "item_map.parquet",
    "user_map.parquet",
    "tag_vocab.parquet",
    PCA_FILE,
    META_FILE,
)
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class ConvertOptions:
    """Every choice of the conversion; all of it is recorded in dataset.json."""

    negatives: int = 3  # sampled negatives per positive; 3 gives 25% positives (SPEC section 8)
    sampling: str = "uniform"  # "uniform" over items, or "popularity" (train-period counts)
    max_len: int = 100  # stored history length: up to this many previous items
    seed: int = 0  # negatives and the slot of the positive among its negatives
    min_tag_count: int = 2  # a tag enters the vocabulary when at least this many items carry it
    tags_per_item: int = 5
    max_users: int = 0  # convert only the first N users in original-id order; 0 = all
    item_emb: Path | None = None  # parquet of precomputed embeddings; None = compute them
    item_emb_id_col: str = "item_id"  # its column of original item ids
    text_encoder: str = "all-MiniLM-L6-v2"
    image_encoder: str = "efficientnet-lite0"
    whiten: bool = False  # whiten the PCA output (computed embeddings only)
    embed_cache: Path | None = None
    embed_batch_size: int = 64

    def __post_init__(self) -> None:
        checks = {
            "--negatives": self.negatives >= 1,
            "--max-len": self.max_len >= 1,
            "--min-tag-count": self.min_tag_count >= 1,
            "--tags-per-item": self.tags_per_item >= 1,
            "--max-users": self.max_users >= 0,
            "--embed-batch-size": self.embed_batch_size >= 1,
        }
        for option, ok in checks.items():
            if not ok:
                raise ConfigError(f"{option} must be >= {0 if option == '--max-users' else 1}")
        if self.sampling not in SAMPLINGS:
            raise ConfigError(
                f"--negatives-sampling {self.sampling!r}: expected one of {', '.join(SAMPLINGS)}"
            )


def convert(
    events: Events,
    items: Items,
    out_dir: str | Path,
    options: ConvertOptions | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
    source: dict[str, Any] | None = None,
    skipped: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the data set into ``out_dir``; returns the content of its dataset.json.

    ``source`` describes the inputs and ``skipped`` adds counted skips made before this call
    (an adapter's); both go into dataset.json. Nothing appears in ``out_dir`` unless every
    file is complete; an existing data set there is replaced only with ``force``.
    """
    t0 = time.perf_counter()
    opts = options or ConvertOptions()
    out = Path(out_dir)
    cw.check_target(out, OUTPUT_FILES, force)
    show = sys.stderr.isatty() if progress is None else progress
    items = _sorted_catalogue(items)
    log, skips = _prepare_log(events, items, opts)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.convert-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would otherwise become the data set's mode
        meta = _build(tmp, log, items, opts, show)
        meta["source"] = source or {"events": events.source, "items": items.source}
        meta["skipped"] = {**(skipped or {}), **skips}
        meta["seconds"] = round(time.perf_counter() - t0, 2)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n")
        cw.place(tmp, out, OUTPUT_FILES)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _sorted_catalogue(items: Items) -> Items:
    """Items in ascending original id, the order that defines new ids 1..N."""
    if len(items.ids) == 0:
        raise DataError(f"{items.source}: no items")
    duplicate_check(items.ids, items.source, items.id_col, csv=False)
    order = np.argsort(items.ids, kind="stable")

    def pick(values: list[Any] | None) -> list[Any] | None:
        return None if values is None else [values[i] for i in order]

    return Items(
        items.ids[order],
        pick(items.titles),
        pick(items.image_paths),
        pick(items.tags),
        items.source,
        items.id_col,
    )


def _prepare_log(
    events: Events, items: Items, opts: ConvertOptions
) -> tuple[cw.SortedLog, dict[str, Any]]:
    """Map ids, sort in time and drop users who cannot give train + valid + test (counted)."""
    if len(events.users) == 0:
        raise DataError(f"{events.source}: no events")
    cat = items.ids
    pos = np.minimum(np.searchsorted(cat, events.items), len(cat) - 1)
    unknown = cat[pos] != events.items
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        distinct = len(np.unique(events.items[unknown]))
        raise DataError(
            f"{where(events.source, row, events.csv)}: column {events.item_col!r}: item "
            f"{show(events.items[row])} is not in {items.source} ({int(unknown.sum())} events, "
            f"{distinct} distinct unknown items); add them to the items file or drop those events"
        )
    item_new = (pos + 1).astype(np.int64)
    names, code = np.unique(events.users, return_inverse=True)
    skips: dict[str, Any] = {}
    keep_event = np.ones(len(code), dtype=bool)
    if opts.max_users and len(names) > opts.max_users:
        keep_event = code < opts.max_users
        skips["users_beyond_max_users"] = {
            "users": int(len(names) - opts.max_users),
            "interactions": int((~keep_event).sum()),
            "why": f"--max-users {opts.max_users}: only the first users in original-id order",
        }
    count = np.bincount(code[keep_event], minlength=len(names))
    short = (count > 0) & (count < MIN_EVENTS)
    skips["users_with_fewer_than_3_interactions"] = {
        "users": int(short.sum()),
        "interactions": int(count[short].sum()),
        "why": "a user needs a train-period interaction, a valid and a test interaction",
    }
    keep_user = count >= MIN_EVENTS
    if not keep_user.any():
        raise DataError(f"{events.source}: no user has {MIN_EVENTS} or more interactions")
    keep_event &= keep_user[code]
    new_user = np.cumsum(keep_user).astype(np.int64)  # 1-based among kept users
    rows = np.flatnonzero(keep_event)
    # the file row breaks ties in the order column, so equal timestamps keep file order
    rows = rows[np.lexsort((rows, events.order[rows], code[rows]))]
    users = new_user[code[rows]]
    length = np.r_[0, count[keep_user]].astype(np.int64)
    start = np.r_[0, np.cumsum(length[1:]) - length[1:]].astype(np.int64)
    log = cw.SortedLog(
        users=users,
        items=item_new[rows],
        pos=np.arange(len(rows), dtype=np.int64) - start[users],
        start=start,
        length=length,
        user_names=names[keep_user],
    )
    return log, skips


def _build(
    tmp: Path, log: cw.SortedLog, items: Items, opts: ConvertOptions, show: bool
) -> dict[str, Any]:
    """Write every data file into ``tmp``; returns dataset.json's content but for the source."""
    num_items, num_users = len(items.ids) + 1, len(log.user_names) + 1
    last = log.length[log.users]
    train_period = log.pos <= last - 3
    role = np.full(len(log.pos), -1, dtype=np.int64)  # -1: first event, history only
    role[(log.pos >= 1) & train_period] = 0
    role[log.pos == last - 2] = 1
    role[log.pos == last - 1] = 2
    if not (role == 0).any():
        raise DataError(
            "no train rows: every kept user has exactly 3 interactions, which give only a "
            "history, a valid and a test row; a train row needs a 4th"
        )

    t_users, t_items = log.users[train_period], log.items[train_period]
    views, train_counts = views_levels(t_items, num_items)
    likes = likes_levels(t_users, t_items, num_users, num_items)
    pool = np.unique(log.items)
    weights = train_counts[pool].astype(np.float64) if opts.sampling == "popularity" else None
    touched = np.unique(log.users * np.int64(num_items) + log.items)
    positives = np.flatnonzero(role >= 0)
    neg_rng, slot_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(opts.seed).spawn(2)
    )
    negatives = sample_negatives(
        log.users[positives],
        touched,
        pool,
        weights,
        opts.negatives,
        num_items,
        neg_rng,
        user_names=np.r_[np.array([None], dtype=object), log.user_names.astype(object)],
    )
    # the embedding may take minutes to compute, so every cheap check above runs first
    if opts.item_emb is not None:
        emb, emb_info = read_item_emb(opts.item_emb, opts.item_emb_id_col, items)
    else:
        emb, emb_info = compute_item_emb(items, tmp, _embed_options(opts), show)
    tags, vocab, tag_info = item_tags(items, opts.min_tag_count, opts.tags_per_item)
    cw.write_tag_vocab(tmp, vocab)
    cw.write_item_info(tmp, tags, emb)
    cw.write_maps(tmp, items.ids, log.user_names)
    rows, rates, lengths = {}, {}, {}
    with cw.progress_bar(len(positives) * (opts.negatives + 1), show) as bar:
        for r, split in enumerate(SPLITS):
            sel = role[positives] == r
            g = positives[sel]
            written, pos_rate = cw.write_split(
                tmp / f"{split}.parquet",
                g,
                negatives[sel],
                log,
                (likes, views),
                opts.max_len,
                slot_rng,
                bar,
            )
            rows[split], rates[split] = written, pos_rate
            lengths[split] = cw.length_stats(np.minimum(log.pos[g], opts.max_len))
    return {
        "format": "microlens-1m-mmctr (converted from an interaction log)",
        "seed": opts.seed,
        "options": asdict(opts),
        "counts": {
            "users": num_users - 1,
            "items": num_items - 1,
            "items_without_interactions": int(num_items - 1 - len(pool)),
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
        "negatives": {
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
            "pool_size": int(len(pool) if weights is None else (weights > 0).sum()),
        },
        "levels": {
            "period": "train period: every interaction but each user's last two",
            "views_level": VIEWS_DEF,
            "likes_level": LIKES_DEF,
            "items_per_views_level": np.bincount(views[1:], minlength=11).tolist(),
            "items_per_likes_level": np.bincount(likes[1:], minlength=11).tolist(),
        },
        "tags": tag_info,
        "embedding": emb_info,
        "files": [*sorted(os.listdir(tmp)), META_FILE],
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
