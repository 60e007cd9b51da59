"""What each ``mmctr`` subcommand does; each takes the parsed arguments, returns an exit code."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from mmctr import api
from mmctr.cli.launch import run_torchrun
from mmctr.config import Config, load_config
from mmctr.data import load_dataset
from mmctr.errors import ConfigError
from mmctr.model import build_model, macs_per_sample, parameter_counts
from mmctr.training import checkpoint as ckpt
from mmctr.training import distributed
from mmctr.training.submission import write_submission
from mmctr.training.tensorboard import TensorBoardMonitor


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


def _train_config(args: argparse.Namespace, run: ckpt.RunDir) -> Config:
    saved = Config.from_dict(json.loads(run.config.read_text())) if run.config.exists() else None
    if args.config is None:
        if saved is None:
            raise ConfigError("--config is required unless --resume finds a run in --out")
        return saved.with_overrides(args.overrides) if args.overrides else saved
    config = load_config(args.config, args.overrides)
    if saved is not None and args.resume and config != saved:
        raise ConfigError(
            f"{run.root} was started with another config ({'; '.join(saved.diff(config))}); "
            "resume it without --config or train into a new --out"
        )
    return config


def train(args: argparse.Namespace) -> int:
    if args.nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {args.nproc}")
    run = ckpt.RunDir(Path(args.out))
    if args.resume and run.finished():
        summary = ckpt.read_summary(run)
        if distributed.launch_rank() == 0:
            print(
                f"{run.root} already finished (best epoch {summary['best_epoch']}, valid auc "
                f"{summary['best_valid']['auc']:.4f}); nothing to do"
            )
        return 0
    if not args.resume and run.has_run():
        raise ConfigError(
            f"{run.root} already holds a run; pass --resume to continue it or choose another --out"
        )
    config = _train_config(args, run)  # checked here, before --nproc starts processes
    if args.nproc > 1 and not distributed.launched():
        return run_torchrun(args.nproc, args.argv)
    world = distributed.join_from_env(config.train.device)  # torchrun's group, if any
    monitor = TensorBoardMonitor(args.tensorboard) if args.tensorboard and world.is_main else None
    try:
        result = api.train(
            args.data, config, run.root, resume=args.resume, progress=args.progress,
            monitor=monitor,
        )  # fmt: skip
    finally:
        if monitor is not None:
            monitor.close()
        distributed.leave()
    if not world.is_main:
        return 0
    v = result.best_valid
    print(
        f"done: best epoch {result.best_epoch} of {result.epochs_run}; valid auc {v['auc']:.4f} "
        f"logloss {v['logloss']:.4f} gauc {v['gauc']:.4f}; "
        f"training {result.train_seconds:.0f}s; run in {run.root}"
    )
    return 0


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
    config = load_config(args.config, args.overrides)
    data = load_dataset(args.data, config.data, ())
    with torch.device("meta"):  # sizes only: no memory, no initialisation cost
        model = build_model(config.model, ckpt.dims_of(data.schema))
    params = parameter_counts(model)
    macs = macs_per_sample(model)
    if args.json:
        print(
            json.dumps(
                {"parameters": params, "macs_per_sample": macs["total"], "macs_by_part": macs}
            )
        )
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
