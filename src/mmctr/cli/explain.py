"""``mmctr explain``: attention of a trained model over sample histories (docs/experiments.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``explain`` under ``sub``."""
    p = sub.add_parser("explain", help="attention maps of a trained run over sample histories")
    p.add_argument("--run", required=True, type=Path, help="run directory of a trained model")
    p.add_argument("--data", required=True, type=Path, help="data directory it was trained on")
    p.add_argument("--rows", required=True, type=int, help="how many rows to explain")
    p.add_argument("--start", type=int, default=0, help="first row (default 0)")
    p.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    p.add_argument("--out", required=True, type=Path, help="folder for the figures and arrays")
    p.add_argument(
        "--compare-mask",
        action="store_true",
        help="also run the same weights under the other mask setting (correct <-> released) "
        "and draw both side by side",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmctr.experiments.explain import explain

    info = explain(
        args.run,
        args.data,
        args.out,
        rows=args.rows,
        split=args.split,
        start=args.start,
        compare_mask=args.compare_mask,
    )
    print(
        f"wrote attention of {len(info['rows'])} {args.split} rows of {args.run} "
        f"({info['model']} model) to {args.out}: attention.npz, explain.json, row-*.png"
    )
    return 0
