"""``mmctr export``: a trained run as an ONNX or TorchScript scoring graph (docs/serving.md)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FORMATS = ("onnx", "torchscript")  # mmctr.export.FORMATS, kept here so --help imports no torch


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``export`` under ``sub``."""
    p = sub.add_parser("export", help="write a trained run as an ONNX or TorchScript scoring graph")
    p.add_argument("--run", required=True, type=Path, help="run directory of a trained model")
    p.add_argument(
        "--data",
        type=Path,
        help="the data folder the run was trained on: checked against the run when given; "
        "needed only by a run that keeps no item table (items.npz: runs written before it)",
    )
    p.add_argument("--format", required=True, choices=FORMATS, dest="fmt")
    p.add_argument("--out", required=True, type=Path, help="file to write, e.g. model.onnx")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmctr.export import export_run

    info = export_run(args.run, args.data, args.fmt, args.out, force=args.force)
    if args.json:
        print(json.dumps(info))
        return 0
    iface = info["interface"]
    check = info["max_abs_diff_check"]
    print(
        f"wrote {info['path']} ({info['format']}, {info['bytes'] / 1e6:.1f} MB) from {args.run} "
        f"in {info['seconds']:.1f}s"
    )
    print(
        f"inputs: history (batch, {iface['history_width']}) int64, target (batch,) int64, "
        f"context (batch, {len(iface['context_cols'])}) int64 "
        f"[{', '.join(iface['context_cols'])}]; outputs: prob, logit (batch,) float32"
    )
    if check is not None:
        print(f"check: max |prob difference| to the model on random rows {check:.1e}")
    return 0
