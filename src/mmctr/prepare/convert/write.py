"""Write the converter's parquet files: the splits row group by row group, items, id maps."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from mmctr.data.layout import ITEM_SCHEMA, ROW_SCHEMA
from mmctr.errors import DataError
from mmctr.prepare.convert.tags import TagVocab

CHUNK_POSITIVES = 10_000  # positives per row group: bounds the memory of the history matrix
Array = np.ndarray[Any, Any]


@dataclass(frozen=True)
class SortedLog:
    """Kept events sorted by (user, order); users are 1..U, items 1..N."""

    users: Array  # (E,) int64 new user id
    items: Array  # (E,) int64 new item id
    pos: Array  # (E,) position within the user's log, 0 = earliest
    start: Array  # (U + 1,) offset of each user's first event; index 0 unused
    length: Array  # (U + 1,) events per user; index 0 unused
    user_names: Array  # (U,) original id of user u at index u - 1

    @classmethod
    def of(cls, users: Array, items: Array, length: Array, user_names: Array) -> SortedLog:
        """From events already sorted by (user, order) and each user's count (``length[0]``
        unused, 0): the offsets and positions follow."""
        start = np.r_[0, np.cumsum(length[1:]) - length[1:]].astype(np.int64)
        pos = np.arange(len(users), dtype=np.int64) - start[users]
        return cls(users, items, pos, start, length, user_names)


def progress_bar(total: int, show: bool) -> Any:
    return tqdm(total=total, unit="row", desc="convert", disable=not show)


def list_column(matrix: Array) -> pa.Array:
    """(n, w) array -> list column built from flat buffers (no per-row Python objects)."""
    offsets = np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(matrix.ravel()))


def histories(events: Array, log: SortedLog, max_len: int) -> Array:
    """The ``max_len`` items before each event in its user's log, left-padded with 0.

    Shape: events (P,) indices into the log -> (P, max_len) int64, most recent last.
    """
    idx = events[:, None] - max_len + np.arange(max_len)[None, :]  # (P, L)
    inside = idx >= log.start[log.users[events]][:, None]
    return np.where(inside, log.items[np.maximum(idx, 0)], 0)


def write_split(
    path: Path,
    events: Array,
    negatives: Array,
    log: SortedLog,
    levels: tuple[Array, Array],
    max_len: int,
    rng: np.random.Generator,
    bar: Any,
) -> tuple[int, float]:
    """One split: each positive event and its negatives as ``1 + K`` rows sharing a history.

    Rows follow users and time; within a group the positive's slot is drawn at random, so no
    model can learn the label from row order. Returns (rows, positive rate).

    Shape: events (P,), negatives (P, K).
    """
    likes, views = levels
    width = negatives.shape[1] + 1
    positives = 0.0
    with pq.ParquetWriter(path, ROW_SCHEMA, compression="zstd") as writer:
        for lo in range(0, len(events), CHUNK_POSITIVES):
            ev = events[lo : lo + CHUNK_POSITIVES]
            targets = np.concatenate([log.items[ev][:, None], negatives[lo : lo + len(ev)]], 1)
            is_pos = np.zeros(targets.shape, dtype=np.float64)
            is_pos[:, 0] = 1.0
            slots = np.argsort(rng.random(targets.shape), axis=1)
            targets = np.take_along_axis(targets, slots, 1).ravel()
            labels = np.take_along_axis(is_pos, slots, 1).ravel()
            hist = np.repeat(histories(ev, log, max_len), width, axis=0)
            table = pa.Table.from_arrays(
                [
                    pa.array(np.repeat(log.users[ev], width)),
                    list_column(hist),
                    pa.array(targets),
                    pa.array(likes[targets]),
                    pa.array(views[targets]),
                    pa.array(labels),
                ],
                schema=ROW_SCHEMA,
            )
            writer.write_table(table, row_group_size=len(table))
            positives += float(labels.sum())
            bar.update(len(table))
    rows = len(events) * width
    return rows, round(positives / rows, 6) if rows else 0.0


def length_stats(lengths: Array) -> dict[str, float]:
    """min / median / mean / max of real history lengths."""
    if lengths.size == 0:
        return {}
    return {
        "min": int(lengths.min()),
        "median": float(np.median(lengths)),
        "mean": round(float(lengths.mean()), 4),
        "max": int(lengths.max()),
    }


def write_item_info(
    out: Path, tags: Array, emb: Array, levels: tuple[Array, Array] | None = None
) -> None:
    """item_info.parquet: row 0 the all-zero padding item, then items 1..N.

    Shape: tags (N, T) int64, emb (N, D) float32, both in new-id order starting at item 1;
    levels (likes, views), each (N + 1,) int64 indexed by item id (row 0 = 0); None = all 0.
    """
    tags = np.vstack([np.zeros((1, tags.shape[1]), np.int64), tags])
    emb = np.vstack([np.zeros((1, emb.shape[1]), np.float32), emb.astype(np.float32)])
    ids = np.arange(len(tags), dtype=np.int64)
    if levels is None:
        levels = (np.zeros(len(ids), np.int64), np.zeros(len(ids), np.int64))
    likes, views = (np.asarray(level, dtype=np.int64) for level in levels)
    table = pa.Table.from_arrays(
        [pa.array(ids), list_column(tags), list_column(emb), pa.array(likes), pa.array(views)],
        schema=ITEM_SCHEMA,
    )
    pq.write_table(table, out / "item_info.parquet", compression="zstd")


def write_maps(out: Path, item_names: Array, user_names: Array) -> None:
    """item_map / user_map: new id -> original id, so results can be joined back."""
    for name, originals in (("item", item_names), ("user", user_names)):
        values = originals.tolist() if originals.dtype == object else originals
        table = pa.table(
            {
                f"{name}_id": pa.array(np.arange(1, len(originals) + 1, dtype=np.int64)),
                f"original_{name}_id": pa.array(values),
            }
        )
        pq.write_table(table, out / f"{name}_map.parquet", compression="zstd")


def write_tag_vocab(out: Path, vocab: TagVocab) -> None:
    table = pa.table(
        {
            "tag_id": pa.array(np.arange(1, vocab.num_tags, dtype=np.int64)),
            "tag": pa.array(vocab.tags, type=pa.string()),
            "num_items": pa.array(vocab.item_counts, type=pa.int64()),
        }
    )
    pq.write_table(table, out / "tag_vocab.parquet", compression="zstd")


def check_target(out: Path, names: tuple[str, ...], force: bool, *, flag: str = "--out") -> None:
    """Refuse to replace a data set in ``out`` unless ``force``; ``flag`` names it in messages."""
    if out.exists() and not out.is_dir():
        raise DataError(f"{flag} {out} is a file; give a folder for the data set")
    found = [name for name in names if (out / name).exists()]
    if found and not force:
        raise DataError(
            f"{out} already holds a data set ({', '.join(found)}); pass --force to replace it "
            f"or choose another {flag}"
        )


def place(tmp: Path, out: Path, names: tuple[str, ...]) -> None:
    """Move the finished files into ``out``: one rename when ``out`` is new or empty."""
    if not out.exists() or not any(out.iterdir()):
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
        return
    # --force into a folder with other files: replace ours one by one, leave theirs alone;
    # dataset.json goes last, so it is present only beside a complete set.
    for name in names:
        if name != names[-1] and not (tmp / name).exists():
            (out / name).unlink(missing_ok=True)  # a stale file of an earlier conversion
    for name in [*sorted(n for n in os.listdir(tmp) if n != names[-1]), names[-1]]:
        os.replace(tmp / name, out / name)
