"""``mmctr experiment``: ablations (paper Table 2), sweeps (Fig. 2) and peers (the 1st place
beside QIN, DIN and their ensemble); docs/experiments.md."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmctr.cli import search as search_cli
from mmctr.cli.flags import add_set_flag, add_track_flags, config_help, tracking_of
from mmctr.config import Config, load_config
from mmctr.errors import ConfigError
from mmctr.experiments.cold import DEFAULT_SEED, HeldOutItems
from mmctr.experiments.confirm import confirm_plan
from mmctr.experiments.experiment import ExperimentResult, file_log, report, run_experiment
from mmctr.experiments.peers import DEFAULT_ITEM_COLS, QIN_PRESET, peers_plan
from mmctr.experiments.plan import (
    ABLATION,
    BEYOND,
    DIN_PRESET,
    VARIANTS,
    Plan,
    ablation_plan,
    sweep_plan,
)
from mmctr.logs import logger


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``experiment ablation`` and ``experiment sweep`` under ``sub``."""
    exp = sub.add_parser("experiment", help="ablations and sweeps over many training runs")
    kinds = exp.add_subparsers(dest="kind", required=True, parser_class=type(exp))

    p = kinds.add_parser(
        "ablation", help="the target-aware Transformer's ablations and the DIN baseline"
    )
    _common(p)
    p.add_argument(
        "--variants",
        help="comma-separated variants (default, in this order: "
        f"{','.join(v.name for v in ABLATION)}); beyond the paper, named only: "
        f"{','.join(v.name for v in BEYOND)}",
    )
    p.add_argument(
        "--din-config",
        type=Path,
        help="TOML of the DIN variants (default: the shipped preset din); its [data] section and "
        "train.epochs/patience/seed are replaced by those of --config",
    )
    add_set_flag(
        p,
        flag="--din-set",
        dest="din_overrides",
        help="override a value of the DIN config, e.g. --din-set model.din.mlp=256,128",
    )
    p.set_defaults(func=run_ablation)

    p = kinds.add_parser("sweep", help="one config key over a list of values")
    _common(p)
    p.add_argument(
        "--param", required=True, help="config key to vary, e.g. model.target_transformer.first_k"
    )
    p.add_argument("--values", required=True, help="comma-separated values, e.g. 1,2,4,8,16,32")
    p.set_defaults(func=run_sweep)
    _add_peers(kinds)
    search_cli.add_parser(kinds)
    _add_confirm(kinds)


def _add_peers(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "peers", help="the target-aware Transformer, QIN and DIN side by side, and an ensemble"
    )
    _common(p)
    for name, default in (("qin", QIN_PRESET), ("din", DIN_PRESET)):
        p.add_argument(
            f"--{name}-config",
            type=Path,
            help=f"TOML of the {name.upper()} variants (default: the shipped preset {default}); "
            "its [data] section and train.epochs/patience/seed are replaced by those of --config",
        )
        add_set_flag(
            p,
            flag=f"--{name}-set",
            dest=f"{name}_overrides",
            help=f"override a value of the {name.upper()} config (repeatable)",
        )
    p.add_argument(
        "--item-cols",
        default=",".join(DEFAULT_ITEM_COLS),
        help="item_info columns of the +items variants (data.item_feature_cols; default "
        f"{','.join(DEFAULT_ITEM_COLS)})",
    )
    p.set_defaults(func=run_peers)


def _add_confirm(kinds: argparse._SubParsersAction) -> None:
    p = kinds.add_parser(
        "confirm",
        help="a search's best configs trained again (e.g. on the whole of train, over seeds) "
        "beside its base config",
    )
    p.add_argument(
        "--search", required=True, type=Path, help="the --out folder of mmctr experiment search"
    )
    p.add_argument(
        "--top", type=int, default=3, help="how many of its best complete trials (default 3)"
    )
    p.add_argument(
        "--trials",
        metavar="N[,M...]",
        help="confirm these complete trials (numbers as in trials.csv) instead of the --top best",
    )
    p.add_argument(
        "--no-base", dest="base", action="store_false", help="leave out the search's base config"
    )
    _common(p, config=False)
    p.set_defaults(func=run_confirm)


def _common(p: argparse.ArgumentParser, *, config: bool = True) -> None:
    p.add_argument("--data", required=True, help="data directory in the challenge layout")
    if config:
        p.add_argument(
            "--config",
            required=True,
            type=Path,
            help=config_help("the target-aware Transformer's config: a TOML file"),
        )
    p.add_argument("--out", required=True, type=Path, help="experiment folder (reused to resume)")
    p.add_argument("--seeds", type=int, default=1, help="runs per variant, seeds seed+0..N-1")
    p.add_argument(
        "--quick", action="store_true", help="one epoch per run: a smoke test, not a result"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs to train at once, each in its own process with cores/N torch threads and "
        "its own copy of the data (default 1)",
    )
    add_set_flag(p, help="override a config value for every run (repeatable)")
    p.add_argument(
        "--held-out-items",
        type=float,
        metavar="F",
        help="cold start: hold a seeded share F (0 < F < 1) of the items out of training in "
        "every run (no train or valid row with them as target, zero id row); the test bucket "
        "unseen is then their rows",
    )
    p.add_argument(
        "--held-out-seed",
        type=int,
        metavar="S",
        help=f"seed of the draw of --held-out-items (default {DEFAULT_SEED})",
    )
    p.add_argument(
        "--report",
        action="store_true",
        help="print the table of the runs finished so far and train nothing (writes nothing: "
        "safe while the experiment runs)",
    )
    add_track_flags(p)


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def run_ablation(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    names = _split(args.variants) or [v.name for v in ABLATION]
    din_config: Config | None = None
    if any(VARIANTS[n].din for n in names if n in VARIANTS):
        din_config = load_config(args.din_config or DIN_PRESET, args.din_overrides)
    plan = ablation_plan(config, din_config, seeds=args.seeds, variants=names, quick=args.quick)
    return _run(plan, args)


def run_peers(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    qin_config = load_config(args.qin_config or QIN_PRESET, args.qin_overrides)
    din_config = load_config(args.din_config or DIN_PRESET, args.din_overrides)
    plan = peers_plan(
        config, qin_config, din_config, item_cols=_split(args.item_cols), seeds=args.seeds,
        quick=args.quick,
    )  # fmt: skip
    return _run(plan, args)


def run_confirm(args: argparse.Namespace) -> int:
    plan = confirm_plan(args.search, top=args.top, seeds=args.seeds, overrides=args.overrides,
                        base=args.base, quick=args.quick,
                        trials=_trial_numbers(args.trials))  # fmt: skip
    return _run(plan, args)


def _trial_numbers(text: str | None) -> list[int]:
    try:
        return [int(part) for part in _split(text)]
    except ValueError:
        raise ConfigError(
            f"--trials takes trial numbers separated by commas, got {text!r}"
        ) from None


def run_sweep(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    plan = sweep_plan(config, args.param, _split(args.values), seeds=args.seeds, quick=args.quick)
    return _run(plan, args)


def _held_out(args: argparse.Namespace) -> HeldOutItems | None:
    if args.held_out_items is None:
        if args.held_out_seed is not None:
            raise ConfigError("--held-out-seed needs --held-out-items")
        return None
    seed = DEFAULT_SEED if args.held_out_seed is None else args.held_out_seed
    return HeldOutItems(args.held_out_items, seed)


def _run(plan: Plan, args: argparse.Namespace) -> int:
    held_out = _held_out(args)
    if args.report:
        print(report(plan, args.out, held_out), end="")
        return 0
    tracking = tracking_of(args)  # its store checked before anything runs
    log = file_log(args.out)
    result: ExperimentResult = run_experiment(
        plan, args.data, args.out, log=log, jobs=args.jobs, held_out=held_out, tracking=tracking
    )
    files = [args.out / "results.csv", args.out / "results.md"]
    if result.figure is not None:
        files.append(result.figure)
    logger("experiments").info("wrote " + ", ".join(str(f) for f in files))
    return 1 if result.failed else 0
