"""A run's life, owned in one place: every face (the CLI, ``mmctr.api``, experiments, bench,
the fidelity scripts) starts runs here.

- ``resolve_config``: the config of a new run, or of a run being resumed (its saved one,
  checked against what the caller asks for);
- ``check_can_start``: refuses to train over a run without ``--resume``; a finished run
  being resumed is reported, not retrained;
- ``new_model``: seeded from ``train.seed``, built from the data schema's sizes, the item
  table loaded and the item-side switches fitted (``model.fit_items``);
- ``train``: all of it under the run folder's lock, with ranks other than 0 quiet, returning
  the model and a typed ``RunSummary``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mmctr.config import Config, load_config
from mmctr.data import DataSchema, Dataset, ItemTable
from mmctr.errors import CheckpointError, ConfigError
from mmctr.logs import Log, logger
from mmctr.model import CTRModel, build_model, fit_items, parameter_counts
from mmctr.training import checkpoint as ckpt
from mmctr.training import distributed
from mmctr.training.inference import attach_items
from mmctr.training.lock import run_lock
from mmctr.training.loop import Monitor, Stopper, fit
from mmctr.training.run_log import RunLog
from mmctr.training.summary import RunSummary
from mmctr.version import mmctr_version

_log = logger("training")


@dataclass(frozen=True)
class TrainedRun:
    model: CTRModel  # the best weights, item table loaded
    summary: RunSummary


def silent(message: str) -> None:
    """The log of a torchrun rank other than 0: in a process group rank 0 alone speaks."""


def saved_config(run: ckpt.RunDir) -> Config | None:
    """The config a run folder was started with (by this or an older mmctr), if any."""
    if not run.config.exists():
        return None
    return Config.from_saved(json.loads(run.config.read_text()), source=str(run.config))


def check_same_config(run: ckpt.RunDir, config: Config, *, advice: str) -> None:
    """ConfigError naming the differing keys when ``run`` was started with another config."""
    saved = saved_config(run)
    if saved is not None and saved != config:
        diffs = "; ".join(saved.diff(config)[:4])
        raise ConfigError(f"{run.root} was started with another config ({diffs}); {advice}")


def resolve_config(
    run_dir: str | Path, config: Config | str | Path | None, overrides: list[str], *, resume: bool
) -> Config:
    """The config to train ``run_dir`` with: ``config`` (a Config, a file or a preset name)
    with ``overrides``; when resuming without one, the run's saved config."""
    run = ckpt.RunDir(Path(run_dir))
    if config is None:
        saved = saved_config(run)
        if saved is None:
            raise ConfigError("--config is required unless --resume finds a run in --out")
        return saved.with_overrides(overrides) if overrides else saved
    if not isinstance(config, Config):
        config = load_config(config, overrides)
    elif overrides:
        config = config.with_overrides(overrides)
    if resume:
        advice = "resume it without --config or train into a new --out"
        check_same_config(run, config, advice=advice)
    return config


def check_can_start(run_dir: str | Path, *, resume: bool) -> RunSummary | None:
    """The summary of a finished run being resumed (nothing to do), else None; a run folder
    that holds a run is refused unless resuming."""
    run = ckpt.RunDir(Path(run_dir))
    if resume and run.finished():
        return RunSummary.read(run.summary)
    if not resume and run.has_run():
        raise CheckpointError(
            f"{run.root} already holds a run; pass --resume to continue it or choose another --out"
        )
    return None


def new_model(
    config: Config,
    schema: DataSchema,
    items: ItemTable | None = None,
    *,
    new_items: np.ndarray | None = None,
    fit: bool = True,
) -> CTRModel:
    """A fresh model of ``config`` for data of ``schema``, its init seeded from ``train.seed``.

    With ``items`` the item table is loaded and (``fit``) the item-side switches fitted on
    it; ``new_items``: ids to treat as new (held out of training: the zero id row).
    """
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, schema.dims)
    if new_items is not None and len(new_items):
        model.items.mark_new_items(torch.as_tensor(new_items, dtype=torch.long))
    if items is not None:
        attach_items(model, items)
        if fit:
            fit_items(model.items, seed=config.train.seed)
    return model


def train(
    data: Dataset,
    config: Config,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool | None = None,
    log: Log = _log.info,
    monitor: Monitor | None = None,
    new_items: np.ndarray | None = None,
    stopper: Stopper | None = None,
) -> TrainedRun:
    """Train ``config`` on ``data`` into ``run_dir`` (resuming it when asked), stopping on
    valid; the model comes back with its best weights. Resuming with a config changed on
    purpose (more epochs, another device: ``--resume --set``) is allowed; ``resolve_config``
    refuses a different ``--config`` file.

    Every line given to ``log`` also goes to ``RUN/train.log`` (run_log.py). In a process
    group (``torchrun``) every rank calls this; rank 0 alone locks and writes the run, logs
    and monitors.
    """
    run = ckpt.RunDir(Path(run_dir))
    world = distributed.current()
    if not world.is_main:
        log, progress, monitor = silent, False, None
    else:  # for --verbose: the run's settings in a line (config.json keeps them all)
        changed = "; ".join(Config().diff(config)) or "nothing"
        _log.debug(f"config, changed from the defaults: {changed}")
    log = run_log = RunLog(run.root if world.is_main else None, log, _first_line(run, data, resume))
    with run_lock(run.root) if world.is_main else contextlib.nullcontext(), run_log:
        check_can_start(run.root, resume=resume)
        fresh = not (resume and run.state.exists())
        t0 = time.perf_counter()
        model = new_model(config, data.schema, data.items, new_items=new_items, fit=fresh)
        if fresh and model.items.needs_fit:
            seconds = time.perf_counter() - t0
            log(f"fitted the item-side switches (docs/beyond.md) in {seconds:.1f}s")
        log(f"model: {parameter_counts(model)['total']:,} parameters")
        summary = fit(model, data, config, run, resume=resume, progress=progress, log=log,
                      monitor=monitor, stopper=stopper)  # fmt: skip
        run_log.note(_last_line(summary))
    return TrainedRun(model, summary)


def _first_line(run: ckpt.RunDir, data: Dataset, resume: bool) -> str:
    """What started, for train.log: mmctr, the process, a new run or a resume, the data."""
    start = "resume of" if resume else "new run in"
    return (
        f"mmctr {mmctr_version()} (process {os.getpid()}): {start} {run.root}; "
        f"{len(data.rows('train')):,} train / {len(data['valid']):,} valid rows, "
        f"schema {data.schema.fingerprint}"
    )


def _last_line(summary: RunSummary) -> str:
    v = summary.best_valid
    return (
        f"done: best epoch {summary.best_epoch} of {summary.epochs_run}; valid auc {v.auc:.4f} "
        f"logloss {v.logloss:.4f} gauc {v.gauc:.4f}; training {summary.train_seconds:.0f}s"
    )
