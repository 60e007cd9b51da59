"""New items of a trained run (cold start): registered after training, scored from their tags
and frozen multimodal embedding.

A new item gets the next free id (the trained items are 0 .. N-1), reads the zero padding row
of the id table, and carries its tags, its item features (``data.item_feature_cols``, e.g. its
levels; 0 = unknown when not given) and 128-d embedding, given directly or computed from its
title and/or cover image with the encoders and PCA that made the data's embeddings (the
``.pca.npz`` beside them, which a run keeps in its item bundle; the ``embed`` extra). ``mmctr
items add`` keeps them in the run's item bundle (``RUN/items.npz``, training/bundle.py; runs
written before it: ``RUN/new_items.parquet``), which ``load_run`` reads back; so does the
service's ``POST /v1/items``, through the same id allocator (training/registration.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmctr.atomic import atomic_path
from mmctr.data.schema import DataSchema
from mmctr.errors import DataError

if TYPE_CHECKING:
    from mmctr.prepare.embed.pca import FittedPCA

NEW_ITEMS_FILE = "new_items.parquet"
TAGS, EMB, ID = "item_tags", "item_emb", "item_id"


def check_new_items(
    tags: np.ndarray, emb: np.ndarray, *, tags_per_item: int, num_tags: int, emb_dim: int,
    where: str,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """(M, T) tag ids and (M, D) embeddings as int64 / float32, or DataError naming the row."""
    tags, emb = np.asarray(tags), np.asarray(emb)
    if tags.ndim != 2 or tags.shape[1] != tags_per_item:
        raise DataError(f"{where}: tags must be {tags_per_item} ids an item, got {tags.shape}")
    if emb.ndim != 2 or emb.shape[1] != emb_dim:
        raise DataError(f"{where}: embeddings must be {emb_dim} values an item, got {emb.shape}")
    if len(tags) != len(emb) or len(tags) == 0:
        raise DataError(f"{where}: give one tags list and one embedding per item, at least one")
    if tags.size and not np.issubdtype(tags.dtype, np.integer):
        raise DataError(f"{where}: tags must be integer ids, got {tags.dtype}")
    bad = np.flatnonzero(((tags < 0) | (tags >= num_tags)).any(1))
    if bad.size:
        raise DataError(f"{where}: item {bad[0]} has a tag outside the run's 0..{num_tags - 1}")
    with np.errstate(over="ignore", invalid="ignore"):  # 1e300 is finite, but not in float32
        emb32 = emb.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(emb32).all(1))
    if bad.size:
        raise DataError(
            f"{where}: item {bad[0]} has a NaN or infinite embedding value (as float32, whose "
            "largest is 3.4e38)"
        )
    return tags.astype(np.int64), emb32


def check_for_schema(
    schema: DataSchema, tags: Any, emb: Any, levels: Any, *, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """New items' (M, T) tags, (M, D) embeddings and (M, C) item features (None: all 0) checked
    against a trained model's schema, or DataError naming the item."""
    item_tags, emb_rows = check_new_items(
        tags, emb, tags_per_item=schema.tags_per_item, num_tags=schema.num_tags,
        emb_dim=schema.emb_dim, where=where,
    )  # fmt: skip
    features = check_new_item_features(
        levels, len(item_tags), cols=schema.item_feature_cols,
        sizes=schema.item_feature_vocab_sizes, where=where,
    )  # fmt: skip
    return item_tags, emb_rows, features


def check_new_item_features(
    levels: np.ndarray | None, count: int, *, cols: tuple[str, ...], sizes: tuple[int, ...],
    where: str,
) -> np.ndarray:  # fmt: skip
    """(M, C) item features of ``count`` new items as int64 (None: all 0, unknown), in the
    order of ``cols``, each in its vocabulary; or DataError naming the item and column."""
    if levels is None:
        return np.zeros((count, len(cols)), dtype=np.int64)
    values = np.asarray(levels)
    if values.ndim != 2 or values.shape != (count, len(cols)):
        raise DataError(
            f"{where}: item features must be {len(cols)} values an item ({', '.join(cols)}) "
            f"for {count} items, got shape {values.shape}"
        )
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise DataError(f"{where}: item features must be integers, got {values.dtype}")
    for c, (col, size) in enumerate(zip(cols, sizes, strict=True)):
        bad = np.flatnonzero((values[:, c] < 0) | (values[:, c] >= size))
        if bad.size:
            raise DataError(
                f"{where}: item {bad[0]}: {col} {values[bad[0], c]} is outside the run's "
                f"0..{size - 1}"
            )
    return values.astype(np.int64)


def read_new_items(run_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(ids, tags, emb) registered for a run, or None when it has none."""
    path = Path(run_dir) / NEW_ITEMS_FILE
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path)
        ids = table.column(ID).to_numpy()
        tags = np.array(table.column(TAGS).to_pylist(), dtype=np.int64)
        emb = np.array(table.column(EMB).to_pylist(), dtype=np.float32)
    except (OSError, KeyError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a new-items file written by mmctr ({exc})") from None
    return ids, tags, emb


def read_new_item_features(run_dir: str | Path, cols: tuple[str, ...]) -> np.ndarray | None:
    """The (M, C) item features of a run's new items, in the order of ``cols``; a column the
    file lacks (written before item features) is 0. None when the run has no new items."""
    path = Path(run_dir) / NEW_ITEMS_FILE
    if not path.is_file():
        return None
    table = pq.read_table(path)
    out = np.zeros((table.num_rows, len(cols)), dtype=np.int64)
    for c, col in enumerate(cols):
        if col in table.column_names:
            out[:, c] = table.column(col).to_numpy()
    return out


def write_new_items(
    run_dir: str | Path,
    ids: np.ndarray,
    tags: np.ndarray,
    emb: np.ndarray,
    features: np.ndarray | None = None,
    feature_cols: tuple[str, ...] = (),
) -> Path:
    """Write every new item of a run (the old ones and the added), atomically; ``features``
    (M, C) go into columns named ``feature_cols``."""
    columns = {
        ID: pa.array(ids, pa.int64()),
        TAGS: pa.array(tags.tolist(), pa.list_(pa.int64())),
        EMB: pa.array(emb.tolist(), pa.list_(pa.float32())),
    }
    if features is not None:
        for c, col in enumerate(feature_cols):
            columns[col] = pa.array(np.asarray(features[:, c], dtype=np.int64), pa.int64())
    table = pa.table(columns)
    path = Path(run_dir) / NEW_ITEMS_FILE
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def embed_from_content(
    pca: str | Path | FittedPCA, titles: list[str | None] | None,
    images: list[str | None] | None, *, image_root: str | Path | None = None,
) -> np.ndarray:  # fmt: skip
    """Frozen embeddings of new items from their titles / cover images, in the space of a PCA
    (or the file of one), with the encoders recorded in it (needs the ``embed`` extra)."""
    from mmctr.prepare.embed import (
        DEFAULT_IMAGE_ENCODER,
        DEFAULT_TEXT_ENCODER,
        FittedPCA,
        encode_items,
    )

    pca_file = "the run's item bundle" if isinstance(pca, FittedPCA) else pca
    pca = pca if isinstance(pca, FittedPCA) else FittedPCA.load(pca)
    encoders = pca.encoders
    if titles is not None and "text" not in encoders:
        raise DataError(f"{pca_file}: its PCA has no text block; give embeddings or images")
    if images is not None and "image" not in encoders:
        raise DataError(f"{pca_file}: its PCA has no image block; give embeddings or titles")
    count = len(titles if titles is not None else images or [])
    raw = encode_items(
        np.arange(1, count + 1), titles, images,
        text_encoder=encoders.get("text", DEFAULT_TEXT_ENCODER),
        image_encoder=encoders.get("image", DEFAULT_IMAGE_ENCODER),
        progress=False, image_root=image_root,
    )  # fmt: skip
    return pca.project(raw.text, raw.image)
