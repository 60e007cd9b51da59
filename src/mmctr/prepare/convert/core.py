"""Turn an interaction log and an item catalogue into the challenge layout (SPEC section 1).

The flow: re-index items (sorted original ids -> 1..N, 0 = padding) and users, order each
user's events, split them in time (last -> test, second to last -> valid, earlier positions with
a history -> train), compute levels from the train period only, sample negatives, and write
every file into a temporary folder that replaces ``out`` only once all of it is complete.
This module maps and sorts the inputs; ``build`` splits, samples and writes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmctr.data.layout import META_FILE
from mmctr.errors import DataError
from mmctr.logs import logger
from mmctr.prepare.convert import write as cw
from mmctr.prepare.convert.build import build
from mmctr.prepare.convert.cold import MIN_EVENTS
from mmctr.prepare.convert.emb import PCA_FILE
from mmctr.prepare.convert.io import Events, Items, duplicate_check, show
from mmctr.prepare.convert.options import ConvertOptions

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
    logger("convert").debug(
        f"{len(log.items):,} interactions of {len(log.user_names):,} users and "
        f"{len(items.ids):,} items kept; writing {out}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.convert-", dir=out.parent))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would otherwise become the data set's mode
        meta = build(tmp, log, items, opts, show)
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
            f"{events.position(row)}: column {events.item_col!r}: item "
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
    return cw.SortedLog.of(users, item_new[rows], length, names[keep_user]), skips
