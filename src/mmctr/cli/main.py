"""The ``mmctr`` command line: argument parsing and exit codes; the work is in commands.py.
``DESCRIPTION``, not this docstring, is what ``mmctr --help`` shows.

Exit codes: 0 success, 2 bad input or usage, 1 anything else. Progress and status lines go
through ``logging`` (mmctr/logs.py): ``-q/--quiet`` keeps warnings and errors only,
``-v/--verbose`` adds debug lines, before or after the subcommand's name.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from typing import Any

from mmctr.cli import commands
from mmctr.cli import convert as convert_cli
from mmctr.cli import embed as embed_cli
from mmctr.cli import ensemble as ensemble_cli
from mmctr.cli import experiment as experiment_cli
from mmctr.cli import explain as explain_cli
from mmctr.cli import export as export_cli
from mmctr.cli import items as items_cli
from mmctr.cli import serve as serve_cli
from mmctr.cli.flags import (
    add_precision_flag,
    add_progress_flag,
    add_set_flag,
    add_track_flags,
    add_verbosity_flags,
    config_help,
)
from mmctr.errors import MmctrError, StorageError
from mmctr.logs import to_terminal
from mmctr.prepare.synth.preset import PRESETS
from mmctr.runtime import keep_freed_memory
from mmctr.version import mmctr_version

DESCRIPTION = (
    "Multimodal click-through-rate prediction on PyTorch: make or convert a data set in the "
    "challenge layout, train the WWW 2025 EReL@MIR 1st-place model (or DIN, QIN), evaluate it, "
    "predict a submission, run experiments and searches, export and serve it. Exit codes: 0 "
    "success, 2 bad input or usage (the message names the file, column, row or config key), "
    "1 anything else. `mmctr COMMAND --help` gives a command's options."
)


class _Parser(argparse.ArgumentParser):
    """Usage errors exit 2 with ``mmctr: error:``; every (sub)command takes -q / -v."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_verbosity_flags(self)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"mmctr: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mmctr", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"mmctr {mmctr_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_data_commands(sub)
    _add_run_commands(sub)
    _add_measure_commands(sub)
    convert_cli.add_parser(sub)
    embed_cli.add_parser(sub)
    ensemble_cli.add_parser(sub)
    experiment_cli.add_parser(sub)
    export_cli.add_parser(sub)
    explain_cli.add_parser(sub)
    items_cli.add_parser(sub)
    serve_cli.add_parser(sub)
    return parser


def _add_data_commands(sub: argparse._SubParsersAction) -> None:
    """synth and sample: data sets in the challenge layout, made or cut down."""
    p = sub.add_parser("synth", help="write a synthetic data set in the challenge layout")
    p.add_argument("out_dir", help="directory to write train/valid/test/item_info parquet into")
    p.add_argument("--preset", default="demo", choices=sorted(PRESETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=commands.synth)

    p = sub.add_parser("sample", help="write a smaller data set in the same layout, seeded")
    p.add_argument(
        "data_dir", metavar="DATA", help="data directory in the challenge layout to sample from"
    )
    p.add_argument("out_dir", metavar="OUT", help="directory to write the sample into")
    p.add_argument(
        "--train-fraction",
        type=float,
        required=True,
        metavar="F",
        help="share of train groups (a positive and its negatives) to keep, in (0, 1]",
    )
    p.add_argument(
        "--valid-users",
        type=int,
        required=True,
        metavar="N",
        help="valid users to keep, with all their rows",
    )
    p.add_argument("--seed", type=int, required=True, metavar="S", help="seed of both draws")
    p.add_argument("--force", action="store_true", help="replace a data set in OUT")
    p.set_defaults(func=commands.sample)


def _add_run_commands(sub: argparse._SubParsersAction) -> None:
    """train, evaluate and predict: a run directory made and used."""
    p = sub.add_parser("train", help="train a model; writes a run directory")
    p.add_argument("--data", required=True, help="data directory in the challenge layout")
    p.add_argument(
        "--config",
        help=config_help() + " (optional with --resume)",
    )
    p.add_argument("--out", required=True, help="run directory to create")
    add_set_flag(p)
    p.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    add_progress_flag(p)
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train data-parallel in N processes on this machine (starts torchrun; "
        "train.batch_size stays the global batch)",
    )
    p.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write training curves for TensorBoard into DIR (the tensorboard extra)",
    )
    add_track_flags(p)
    p.set_defaults(func=commands.train)

    p = sub.add_parser("evaluate", help="AUC, logloss and gAUC of a trained run on a split")
    p.add_argument("--run", required=True, help="run directory written by `mmctr train`")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    add_precision_flag(p)
    p.add_argument(
        "--by-item-frequency",
        action="store_true",
        help="also report the metrics per bucket of how often the target item is a train "
        "target: unseen, 1-5, 6-50, >50 (cold start)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=commands.evaluate)

    p = sub.add_parser("predict", help="write a challenge submission zip")
    p.add_argument("--run", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--out", required=True, help="submission file, e.g. submission.zip")
    add_precision_flag(p)
    add_progress_flag(p)
    p.set_defaults(func=commands.predict)


def _add_measure_commands(sub: argparse._SubParsersAction) -> None:
    """describe and bench: what a config costs."""
    p = sub.add_parser("describe", help="parameter count and multiply-adds per sample")
    p.add_argument("--config", required=True, help=config_help())
    p.add_argument("--data", required=True)
    add_set_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.describe)

    p = sub.add_parser("bench", help="training/inference samples/s, load time, peak memory")
    p.add_argument("--config", required=True, help=config_help())
    p.add_argument("--data", required=True)
    p.add_argument("--batches", type=int, default=20, help="timed training batches")
    p.add_argument(
        "--warmup",
        type=int,
        default=3,
        help="untimed training batches first (more for large models: the allocator settles)",
    )
    p.add_argument(
        "--baseline",
        action="store_true",
        help="also time the plain full-length path on the same batches and report the speed-ups",
    )
    p.add_argument(
        "--compare-bf16",
        action="store_true",
        help="also time bf16 on the same batches (autocast training, scoring on bf16 weights)",
    )
    p.add_argument(
        "--min-history",
        type=int,
        default=0,
        help="time only train rows with at least this many history items (e.g. max_len)",
    )
    add_set_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=commands.bench)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` restarts it
    keep_freed_memory()
    # `kill` (SIGTERM) stops a run like Ctrl-C: cleanly, ending the worker processes of
    # `experiment --jobs`, with its checkpoints left to resume from. It is also the way to stop
    # a run started in the background, which ignores SIGINT. Restored on return, for callers.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        with to_terminal(getattr(args, "log_level", logging.INFO)):  # -q / -v: logs.py
            code: int = args.func(args)
        return code
    except StorageError as exc:  # a full or read-only disk: the machine, not the input
        print(f"mmctr: error: {exc}", file=sys.stderr)
        return 1
    except MmctrError as exc:
        print(f"mmctr: error: {exc}", file=sys.stderr)
        return 2
    except FileExistsError as exc:
        print(f"mmctr: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmctr: interrupted", file=sys.stderr)
        return 1
    except Exception as exc:
        traceback.print_exc()
        print(f"mmctr: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
