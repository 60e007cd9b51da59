"""MicroLens-50k (pairs + titles + covers) onto the general converter.

The pairs file has one line per user, ``user_id<TAB>item item ...`` in time order and no
timestamps, so an event's order is its position in the file. Covers, when given, are
``<covers>/<item>_frame0.jpg``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mmctr.errors import DataError
from mmctr.prepare.convert.core import convert
from mmctr.prepare.convert.io import (
    DELIMITERS,
    Events,
    Items,
    duplicate_check,
    id_values,
    read_table,
    require,
    text_values,
    unify_ids,
)
from mmctr.prepare.convert.options import ConvertOptions

COVER_NAME = "{}_frame0.jpg"


def read_pairs(path: Path) -> tuple[Events, dict[str, Any]]:
    """Events of the pairs file (order = position in the file) and its counted skips."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pairs file not found: {path}")
    users: list[int] = []
    items: list[int] = []
    lines: list[int] = []
    empty_users = 0
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{path.name} line {n}: not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from None
            if not line.strip():
                continue  # a blank line holds no user
            user, sep, rest = line.partition("\t")
            if not sep:
                raise DataError(f"{path.name} line {n}: expected 'user_id<TAB>item item ...'")
            try:
                uid, seq = int(user), [int(t) for t in rest.split()]
            except ValueError as exc:
                raise DataError(f"{path.name} line {n}: ids must be integers ({exc})") from None
            if not seq:
                empty_users += 1
            users.extend([uid] * len(seq))
            items.extend(seq)
            lines.extend([n] * len(seq))
    if not items:
        raise DataError(f"{path.name}: file is empty (no interactions)")
    events = Events(
        users=np.asarray(users, dtype=np.int64),
        items=np.asarray(items, dtype=np.int64),
        order=np.arange(len(items), dtype=np.int64),
        source=path.name,
        item_col="item",
        lines=np.asarray(lines, dtype=np.int64),
    )
    skipped = {}
    if empty_users:
        skipped["users_without_interactions"] = {
            "users": empty_users,
            "interactions": 0,
            "why": "a pairs line with a user id but no items",
        }
    return events, skipped


def read_titles(path: Path, covers: Path | None = None) -> tuple[Items, dict[str, Any]]:
    """Items of the titles CSV (``item,title``), with cover paths where a cover exists."""
    path = Path(path)
    table = read_table(path, "titles")
    csv = path.suffix.lower() in DELIMITERS
    ids = id_values(
        require(table, "item", path.name, "a header 'item,title'"), path.name, "item", csv
    )
    titles_col = require(table, "title", path.name, "a header 'item,title'")
    titles = text_values(titles_col, path.name, "title", csv)
    assert titles is not None
    (item_ids,) = unify_ids(ids)
    duplicate_check(item_ids, path.name, "item", csv)
    images: list[str | None] | None = None
    info: dict[str, Any] = {"covers": None}
    if covers is not None:
        covers = Path(covers)
        if not covers.is_dir():
            raise DataError(f"--covers {covers}: folder not found")
        present = set(os.listdir(covers))
        names = [COVER_NAME.format(i) for i in item_ids]
        images = [str((covers / f).resolve()) if f in present else None for f in names]
        found = sum(p is not None for p in images)
        info = {
            "covers": str(covers),
            "items_with_cover": found,
            "items_without_cover": len(names) - found,
        }
    return Items(item_ids, titles, images, None, path.name, "item"), info


def convert_microlens(
    pairs: Path,
    titles: Path,
    out_dir: Path,
    covers: Path | None = None,
    options: ConvertOptions | None = None,
    *,
    force: bool = False,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Convert MicroLens-50k; returns dataset.json's content."""
    events, skipped = read_pairs(pairs)
    items, cover_info = read_titles(titles, covers)
    source = {
        "format": "MicroLens-50k pairs + titles",
        "pairs": str(pairs),
        "titles": str(titles),
        "order": "position in the pairs file (the data has no timestamps)",
        **cover_info,
    }
    return convert(
        events,
        items,
        out_dir,
        options,
        force=force,
        progress=progress,
        source=source,
        skipped=skipped,
    )
