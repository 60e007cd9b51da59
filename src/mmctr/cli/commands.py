"""What each ``mmctr`` subcommand does; each takes the parsed arguments, returns an exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import torch

from mmctr import api
from mmctr.cli.flags import tracking_of
from mmctr.cli.launch import run_torchrun
from mmctr.config import Config, load_config
from mmctr.errors import ConfigError
from mmctr.logs import logger
from mmctr.training import distributed
from mmctr.training import run as runs
from mmctr.training.loop import Monitor
from mmctr.training.submission import write_submission
from mmctr.training.tensorboard import TensorBoardMonitor
from mmctr.training.tracking import TrackedRun, Tracking, tracked_run


def synth(args: argparse.Namespace) -> int:
    from mmctr.prepare.synth import generate

    t0 = time.perf_counter()
    info = generate(args.out_dir, args.preset, seed=args.seed, overwrite=args.force)
    counts = info["counts"]
    rows = ", ".join(f"{s} {counts['rows'][s]:,}" for s in ("train", "valid", "test"))
    print(
        f"wrote {args.preset} data set to {args.out_dir} ({rows} rows; "
        f"{counts['items']:,} items) in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def sample(args: argparse.Namespace) -> int:
    from mmctr.prepare.sample import sample_dataset

    t0 = time.perf_counter()
    info = sample_dataset(
        args.data_dir,
        args.out_dir,
        train_fraction=args.train_fraction,
        valid_users=args.valid_users,
        seed=args.seed,
        overwrite=args.force,
    )
    rows, source, groups = info["rows"], info["source_rows"], info["train_groups"]
    print(
        f"wrote sample of {args.data_dir} to {args.out_dir}: train {rows['train']:,} of "
        f"{source['train']:,} rows ({groups['kept']:,} of {groups['total']:,} groups), valid "
        f"{rows['valid']:,} of {source['valid']:,} rows ({info['valid_users']:,} of "
        f"{info['valid_users_total']:,} users), test {rows['test']:,} rows "
        f"({info['shared_files']['test.parquet']}) in {time.perf_counter() - t0:.1f}s"
    )
    return 0


def train(args: argparse.Namespace) -> int:
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    out = Path(args.out)
    finished = runs.check_can_start(out, resume=args.resume)
    if finished is not None:
        if distributed.launch_rank() == 0:
            logger("training").info(
                f"{out} already finished (best epoch {finished.best_epoch}, valid auc "
                f"{finished.best_valid.auc:.4f}); nothing to do"
            )
        return 0
    # checked here, before --nproc starts processes
    config = runs.resolve_config(out, args.config, args.overrides, resume=args.resume)
    tracking = tracking_of(args) if distributed.launch_rank() == 0 else None
    if args.nproc > 1 and not distributed.launched():
        return run_torchrun(args.nproc, args.argv)
    world = distributed.join_from_env(config.train.device)  # torchrun's group, if any
    monitor = TensorBoardMonitor(args.tensorboard) if args.tensorboard and world.is_main else None
    try:
        with _tracked(tracking, out, config) as tracked:
            monitors = _all_of(monitor, tracked)
            result = api.train(
                args.data, config, out, resume=args.resume, progress=args.progress, monitor=monitors
            )
    finally:
        if monitor is not None:
            monitor.close()
        distributed.leave()
    if not world.is_main:
        return 0
    v = result.best_valid
    logger("training").info(
        f"done: best epoch {result.best_epoch} of {result.epochs_run}; valid auc {v.auc:.4f} "
        f"logloss {v.logloss:.4f} gauc {v.gauc:.4f}; "
        f"training {result.train_seconds:.0f}s; run in {out}"
    )
    return 0


def _tracked(
    tracking: Tracking | None, out: Path, config: Config
) -> contextlib.AbstractContextManager[TrackedRun | None]:
    """The train run's MLflow run (named after its folder) with --track, else nothing."""
    if tracking is None:
        return contextlib.nullcontext()
    return tracked_run(tracking, out.resolve().name, config, out)


class _AllOf:
    """Monitors told the same epochs, in order."""

    def __init__(self, monitors: list[Monitor]) -> None:
        self.monitors = monitors

    def epoch(self, epoch: int, step_losses: torch.Tensor, record: dict[str, Any]) -> None:
        for monitor in self.monitors:
            monitor.epoch(epoch, step_losses, record)


def _all_of(*monitors: Monitor | None) -> Monitor | None:
    given = [m for m in monitors if m is not None]
    return None if not given else given[0] if len(given) == 1 else _AllOf(given)


def evaluate(args: argparse.Namespace) -> int:
    scorer = api.load_run(args.run, args.data, precision=args.precision)
    split = scorer.split(args.split, require_labels=True)
    counts = scorer.train_target_counts() if args.by_item_frequency else None
    metrics = scorer.report(split, counts)
    buckets = metrics.pop("by_item_frequency", [])
    if args.json:
        # nan (a bucket without both classes) is not JSON: null
        clean = [{k: None if v != v else v for k, v in b.items()} for b in buckets]
        extra = {"by_item_frequency": clean} if args.by_item_frequency else {}
        print(json.dumps({**metrics, "split": args.split, "rows": len(split),
                          "precision": args.precision, **extra}))  # fmt: skip
        return 0
    print(
        f"{args.split}: auc {metrics['auc']:.4f}  logloss {metrics['logloss']:.4f}  "
        f"gauc {metrics['gauc']:.4f}  ({len(split):,} rows)"
    )
    if buckets:
        print("by how often the target item is a train target:")
        for b in buckets:
            print(
                f"  {b['bucket']:>6}  auc {b['auc']:.4f}  logloss {b['logloss']:.4f}  "
                f"gauc {b['gauc']:.4f}  ({b['rows']:,} rows, {b['positives']:,} clicks)"
            )
    return 0


def predict(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix != ".zip":
        raise ConfigError(f"--out {out}: a submission must be a .zip file")
    scorer = api.load_run(args.run, args.data, precision=args.precision)
    split = scorer.split(args.split)
    write_submission(scorer.predict(split, progress=bool(args.progress)), out)
    print(f"wrote {len(split):,} predictions for {args.split} to {out}")
    return 0


def describe(args: argparse.Namespace) -> int:
    from mmctr.training.bench import model_size

    size = model_size(load_config(args.config, args.overrides), args.data)
    params, macs = size["parameters"], size["macs_by_part"]
    if args.json:
        print(json.dumps(size))
        return 0
    width = max(len(k) for k in params)
    print(f"{'part':<{width}}  {'parameters':>13}  {'MACs/sample':>13}")
    for part, n in params.items():
        print(f"{part:<{width}}  {n:>13,}  {macs.get(part, 0):>13,}")
    return 0


def bench(args: argparse.Namespace) -> int:
    from mmctr.training.bench import bench as run_bench

    if args.batches < 1:
        raise ConfigError(f"--batches must be >= 1, got {args.batches}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    config = load_config(args.config, args.overrides)
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    if args.min_history < 0:
        raise ConfigError(f"--min-history must be >= 0, got {args.min_history}")
    result = run_bench(
        config,
        args.data,
        batches=args.batches,
        warmup=args.warmup,
        baseline=args.baseline,
        min_history=args.min_history,
        compare_bf16=args.compare_bf16,
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if isinstance(value, dict):
                for sub_key, sub_value in value.items():
                    print(f"{key + '.' + sub_key:<36} {sub_value}")
            else:
                print(f"{key:<36} {value}")
    return 0
