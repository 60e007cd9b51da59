"""Options that several subcommands share, defined once."""

from __future__ import annotations

import argparse
import logging

from mmctr.config import preset_names
from mmctr.errors import ConfigError
from mmctr.training.precision import INFERENCE_PRECISIONS
from mmctr.training.tracking import Tracking


def add_verbosity_flags(p: argparse.ArgumentParser) -> None:
    """-q/--quiet and -v/--verbose, on ``mmctr`` and on every subcommand alike (before or
    after its name). Unset unless given, so that a subcommand's parser never resets the level
    given before it; ``main`` reads ``log_level``, INFO when absent."""
    group = p.add_mutually_exclusive_group()
    for flags, level, help in (
        (("-q", "--quiet"), logging.WARNING, "warnings and errors only: no progress lines"),
        (("-v", "--verbose"), logging.DEBUG, "also debug lines"),
    ):
        group.add_argument(
            *flags, dest="log_level", action="store_const", const=level,
            default=argparse.SUPPRESS, help=help,
        )  # fmt: skip


def config_help(what: str = "TOML file") -> str:
    """The help of a --config flag: ``what`` it takes, then the presets shipped in the package,
    listed from the package data so that a new preset is never left out."""
    return f"{what}, or a shipped preset: {', '.join(preset_names())}"


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


def add_track_flags(p: argparse.ArgumentParser) -> None:
    """--track URI and --track-experiment NAME (tracking on MLflow, the track extra)."""
    p.add_argument(
        "--track",
        metavar="URI",
        help="also log the runs to MLflow: a folder (a SQLite store made in it) or a tracking "
        "URI (sqlite:///..., http://...); the track extra",
    )
    p.add_argument(
        "--track-experiment",
        metavar="NAME",
        help="the MLflow experiment the runs go into (default mmctr)",
    )


def tracking_of(args: argparse.Namespace) -> Tracking | None:
    """The ``Tracking`` of --track, its store checked now (before anything trains); None
    without the flag."""
    if args.track is None:
        if args.track_experiment is not None:
            raise ConfigError("--track-experiment needs --track")
        return None
    return Tracking.from_flag(args.track, args.track_experiment or "mmctr")
