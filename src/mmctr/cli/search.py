"""``mmctr experiment search``: a hyper-parameter search on Optuna (docs/search.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmctr.cli.flags import add_set_flag, add_track_flags, config_help, tracking_of
from mmctr.config import load_config
from mmctr.errors import ConfigError


def add_parser(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "search",
        help="search config keys for the best valid AUC (Optuna; the search extra)",
        description="Search a TOML space of config keys around --config on valid AUC, with "
        "TPE sampling and a median pruner; the study is kept in OUT/study.db, so the same "
        "command resumes a stopped search.",
    )
    p.add_argument("--data", required=True, help="data directory in the challenge layout")
    p.add_argument("--config", required=True, type=Path, help=config_help("the base config: TOML"))
    p.add_argument("--space", required=True, type=Path, help="TOML search space ([[param]] tables)")
    p.add_argument("--out", required=True, type=Path, help="search folder (reused to resume)")
    p.add_argument(
        "--trials",
        type=int,
        default=20,
        help="finished trials the study should hold (complete, pruned or failed; default 20)",
    )
    p.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trials at once, each in its own process with cores/N torch threads (default 1)",
    )
    p.add_argument(
        "--no-prune", action="store_true", help="train every trial to its own end (no pruner)"
    )
    add_set_flag(p, help="override a value of --config for every trial (repeatable)")
    add_track_flags(p)
    p.set_defaults(func=run_search_command)


def run_search_command(args: argparse.Namespace) -> int:
    try:
        import optuna
    except ImportError:
        raise ConfigError("experiment search needs Optuna: pip install 'mmctr[search]'") from None
    from mmctr.experiments.experiment import file_log
    from mmctr.search import SearchSettings, load_space, run_search

    base = load_config(args.config, args.overrides)
    space = load_space(args.space, base)
    pruner = optuna.pruners.NopPruner() if args.no_prune else None
    tracking = tracking_of(args)  # the store checked before any trial starts
    settings = SearchSettings(
        trials=args.trials, timeout=args.timeout, jobs=args.jobs, pruner=pruner, tracking=tracking
    )
    result = run_search(base, space, args.data, args.out, settings, log=file_log(args.out))
    print("wrote " + ", ".join(str(f) for f in result.files))
    return 0
