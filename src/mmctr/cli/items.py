"""`mmctr items add`: register new items with a trained run (cold start)."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mmctr.errors import DataError

if TYPE_CHECKING:
    from mmctr.api import Scorer


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("items", help="new items of a trained run, scored without a learned id")
    actions = p.add_subparsers(dest="items_command", required=True)
    a = actions.add_parser(
        "add",
        help="register items from a parquet file: item_tags and item_emb, or title / image_path",
    )
    a.add_argument("--run", required=True, help="run directory written by `mmctr train`")
    a.add_argument(
        "--data",
        help="the data folder the run was trained on: checked against the run when given; "
        "needed only by a run that keeps no item table (items.npz: runs written before it)",
    )
    a.add_argument(
        "--items",
        required=True,
        help="parquet with item_tags (list of tag ids) and item_emb (the frozen embedding), or "
        "title and/or image_path to embed with --pca; and, for a run with item features "
        "(data.item_feature_cols), a column of each (e.g. likes_level): a missing one is 0",
    )
    a.add_argument(
        "--pca",
        help="the .pca.npz that made the data's embeddings, to embed title/image_path (default: "
        "the one the run keeps, when its data folder had one)",
    )
    a.add_argument("--image-root", help="folder that relative image paths start from")
    a.add_argument("--json", action="store_true", help="print the new ids as JSON")
    a.set_defaults(func=add_items)


def add_items(args: argparse.Namespace) -> int:
    from mmctr.api import load_run
    from mmctr.training.registration import register_items

    table = _read(args.items)
    scorer = load_run(args.run, args.data, device="cpu")  # its schema, the PCA it keeps
    tags = _column(table, "item_tags", args.items)
    if "item_emb" in table.column_names:
        emb = np.array(_column(table, "item_emb", args.items), dtype=np.float64)
    else:
        emb = _embed(table, args, scorer)
    levels = _levels(table, scorer.schema.item_feature_cols, args.items)
    # the ids and the write under the run's lock, held for that alone: a server registering
    # items with the same run (POST /v1/items) takes turns with this, through the same code
    done = register_items([args.run], scorer.schema, np.array(tags, dtype=np.int64), emb, levels)
    ids = done.ids
    if args.json:
        print(json.dumps({"ids": ids.tolist()}))
    else:
        print(f"registered {len(ids):,} new items with {args.run}: ids {ids[0]}..{ids[-1]}")
    return 0


def _read(path: str) -> pa.Table:
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot read it as parquet ({exc})") from None


def _column(table: pa.Table, name: str, path: str) -> list[Any]:
    if name not in table.column_names:
        raise DataError(f"{path}: missing column {name!r} (has {', '.join(table.column_names)})")
    values = table.column(name).to_pylist()
    bad = [i for i, v in enumerate(values) if v is None]
    if bad:
        raise DataError(f"{path}: column {name!r} row {bad[0]} is null")
    return values


def _levels(table: pa.Table, cols: tuple[str, ...], path: str) -> np.ndarray | None:
    """The run's item features from the columns of the same names (a missing one: 0, unknown);
    None when the run has none."""
    if not cols:
        return None
    out = np.zeros((table.num_rows, len(cols)), dtype=np.int64)
    for c, col in enumerate(cols):
        if col in table.column_names:
            out[:, c] = np.array(_column(table, col, path), dtype=np.int64)
    return out


def _embed(table: pa.Table, args: argparse.Namespace, scorer: Scorer) -> np.ndarray:
    """Embeddings of the items' titles / images with --pca, else the PCA the run keeps."""
    from mmctr.items import embed_from_content
    from mmctr.prepare.embed import FittedPCA
    from mmctr.training.bundle import read_bundle

    titles = table.column("title").to_pylist() if "title" in table.column_names else None
    images = table.column("image_path").to_pylist() if "image_path" in table.column_names else None
    if titles is None and images is None:
        raise DataError(f"{args.items}: give item_emb, or title and/or image_path with --pca")
    kept = None if args.pca else read_bundle(args.run, scorer.schema)
    pca = FittedPCA.load(args.pca) if args.pca else kept.pca if kept is not None else None
    if pca is None:
        raise DataError(
            f"{args.items}: embedding items from title/image_path needs --pca FILE (the run "
            "keeps none: it keeps the item_emb.pca.npz of the data folder it was trained on)"
        )
    return embed_from_content(pca, titles, images, image_root=args.image_root)
