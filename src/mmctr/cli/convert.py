"""``mmctr convert``: turn interaction logs into the challenge layout (docs/convert.md)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmctr.cli.flags import add_progress_flag
from mmctr.logs import logger
from mmctr.prepare.convert.options import ConvertOptions

ITEM_DEFAULTS = {"title_col": "title", "image_col": "image_path", "tags_col": "tags"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``convert interactions`` and ``convert microlens-50k`` under ``sub``."""
    convert = sub.add_parser("convert", help="turn an interaction log into the challenge layout")
    kinds = convert.add_subparsers(dest="source", required=True, parser_class=type(convert))

    p = kinds.add_parser("interactions", help="from an events file and an items file")
    p.add_argument("--events", required=True, type=Path, help="events: .csv, .tsv or .parquet")
    p.add_argument("--items", required=True, type=Path, help="item catalogue: .csv/.tsv/.parquet")
    p.add_argument("--user-col", default="user_id", help="events: user column")
    p.add_argument("--item-col", default="item_id", help="events: item column")
    p.add_argument("--order-col", default="timestamp", help="events: timestamp or position column")
    p.add_argument("--items-id-col", help="items: id column (default: --item-col)")
    p.add_argument("--title-col", help="items: title column (default: 'title' if present)")
    p.add_argument(
        "--image-col", help="items: image path column (default: 'image_path' if present)"
    )
    p.add_argument(
        "--tags-col",
        help="items: tags, a list<string> column or a string split on --tag-sep "
        "(default: 'tags' if present, else #hashtags of the titles)",
    )
    p.add_argument("--tag-sep", default="|", help="separator of a string tags column")
    _common(p)
    p.set_defaults(func=run_interactions)

    p = kinds.add_parser("microlens-50k", help="from MicroLens-50k pairs + titles (+ covers)")
    p.add_argument("--pairs", required=True, type=Path, help="MicroLens-50k_pairs.tsv")
    p.add_argument("--titles", required=True, type=Path, help="MicroLens-50k_titles.csv")
    p.add_argument("--covers", type=Path, help="folder of <item>_frame0.jpg covers")
    _common(p)
    p.set_defaults(func=run_microlens)


def _common(p: argparse.ArgumentParser) -> None:
    d = ConvertOptions()
    p.add_argument("--out", required=True, type=Path, help="folder to write the data set into")
    p.add_argument(
        "--negatives", type=int, default=d.negatives, help="negatives per positive (default 3)"
    )
    p.add_argument(
        "--negatives-sampling",
        dest="sampling",
        default=d.sampling,
        choices=["uniform", "popularity"],
        help="uniform over items (default) or by train-period popularity",
    )
    p.add_argument("--max-len", type=int, default=d.max_len, help="history length (100)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument(
        "--min-tag-count", type=int, default=d.min_tag_count, help="items a tag needs (2)"
    )
    p.add_argument("--tags-per-item", type=int, default=d.tags_per_item)
    p.add_argument(
        "--max-users", type=int, default=0, help="only the first N users by id (0 = all)"
    )
    p.add_argument(
        "--cold-items",
        type=float,
        default=d.cold_items,
        metavar="SHARE",
        help="hold this share of the items out of the train period, so that valid and test "
        "meet them as new items (a cold-start test; default 0)",
    )
    p.add_argument(
        "--item-emb", type=Path, help="parquet: original item id + item_emb_d128 (128 floats)"
    )
    p.add_argument("--item-emb-id-col", default=d.item_emb_id_col)
    p.add_argument("--text-encoder", default=d.text_encoder)
    p.add_argument("--image-encoder", default=d.image_encoder)
    p.add_argument("--whiten", action="store_true", help="whiten the computed PCA embedding")
    p.add_argument("--embed-cache", type=Path, help="cache folder of the encoders")
    p.add_argument("--embed-batch-size", type=int, default=d.embed_batch_size)
    p.add_argument("--force", action="store_true", help="replace an existing data set in --out")
    add_progress_flag(p)


def _options(args: argparse.Namespace) -> ConvertOptions:
    return ConvertOptions(
        negatives=args.negatives,
        sampling=args.sampling,
        max_len=args.max_len,
        seed=args.seed,
        min_tag_count=args.min_tag_count,
        tags_per_item=args.tags_per_item,
        max_users=args.max_users,
        cold_items=args.cold_items,
        item_emb=args.item_emb,
        item_emb_id_col=args.item_emb_id_col,
        text_encoder=args.text_encoder,
        image_encoder=args.image_encoder,
        whiten=args.whiten,
        embed_cache=args.embed_cache,
        embed_batch_size=args.embed_batch_size,
    )


def run_interactions(args: argparse.Namespace) -> int:
    from mmctr.prepare.convert.core import convert
    from mmctr.prepare.convert.io import load_inputs

    options = _options(args)  # bad options fail before any file is read
    strict = [getattr(args, k) for k in ITEM_DEFAULTS if getattr(args, k) is not None]
    columns = {k: getattr(args, k) or default for k, default in ITEM_DEFAULTS.items()}
    events, items = load_inputs(
        args.events,
        args.items,
        user_col=args.user_col,
        item_col=args.item_col,
        order_col=args.order_col,
        items_id_col=args.items_id_col,
        tag_sep=args.tag_sep,
        strict=strict,
        **columns,
    )
    source = {"events": str(args.events), "items": str(args.items), **_columns_used(args, columns)}
    meta = convert(
        events, items, args.out, options, force=args.force, progress=args.progress, source=source
    )
    logger("convert").info(summary(meta, args.out))
    return 0


def _columns_used(args: argparse.Namespace, columns: dict[str, str]) -> dict[str, Any]:
    """The column names used, for dataset.json."""
    return {
        "user_col": args.user_col,
        "item_col": args.item_col,
        "order_col": args.order_col,
        "items_id_col": args.items_id_col or args.item_col,
        **columns,
    }


def run_microlens(args: argparse.Namespace) -> int:
    from mmctr.prepare.convert.microlens import convert_microlens

    meta = convert_microlens(
        args.pairs,
        args.titles,
        args.out,
        args.covers,
        _options(args),
        force=args.force,
        progress=args.progress,
    )
    logger("convert").info(summary(meta, args.out))
    return 0


def summary(meta: dict[str, Any], out: Path) -> str:
    """A few lines: rows, positive rates, items, tags, skips and the time taken."""
    counts = meta["counts"]
    rows = ", ".join(
        f"{s} {counts['rows'][s]:,} ({meta['positive_rate'][s]:.0%} positive)"
        for s in ("train", "valid", "test")
    )
    skips = "; ".join(
        f"{name.replace('_', ' ')}: {v['users']:,} users / {v['interactions']:,} interactions"
        for name, v in meta["skipped"].items()
    )
    emb = meta["embedding"]
    missing = emb.get("items_missing_zero_vector")
    lines = [
        f"wrote {out}: {rows}",
        f"{counts['users']:,} users, {counts['items']:,} items, {counts['tags'] - 1:,} tags "
        f"(+ padding), {counts['interactions']:,} interactions",
        f"skipped: {skips or 'nothing'}",
    ]
    cold = meta.get("cold_items")
    if cold:
        lines.append(
            f"cold items: {cold['items']:,} held out of the train period "
            f"({cold['interactions_removed']:,} interactions removed, "
            f"{cold['users_dropped']:,} users left with under 3 dropped)"
        )
    if missing:
        lines.append(f"embedding: {missing:,} items not in --item-emb got a zero vector")
    if emb.get("image_paths_not_found"):
        lines.append(
            f"embedding: {emb['image_paths_not_found']:,} image paths not found (text only)"
        )
    lines.append(f"done in {meta['seconds']:.1f}s")
    return "\n".join(lines)
