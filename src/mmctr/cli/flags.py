"""Options that several subcommands share, defined once."""

from __future__ import annotations

import argparse

from mmctr.training.precision import INFERENCE_PRECISIONS


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show progress bars (default: when stderr is a terminal)",
    )


def add_set_flag(
    p: argparse.ArgumentParser,
    *,
    flag: str = "--set",
    dest: str = "overrides",
    help: str = "override one config value, e.g. --set train.lr=1e-3 (repeatable)",
) -> None:
    p.add_argument(
        flag, dest=dest, action="append", default=[], metavar="SECTION.KEY=VALUE", help=help
    )


def add_precision_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--precision",
        default="fp32",
        choices=INFERENCE_PRECISIONS,
        help="score with bfloat16 weights or int8-quantised Linear layers (default fp32)",
    )
