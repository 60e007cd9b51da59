"""Tracking on MLflow (``--track URI``, the ``track`` extra): runs kept in a local store or on
a tracking server, beside their run folders.

An MLflow run of a training run holds
- params: the config, flattened to ``section.key`` names (``model.target_transformer.first_k``),
  every value a string (non-strings as JSON: ``[32, 16]``, ``true``, ``0.003``);
- metrics: the numbers of each epoch's record (``valid_auc``, ``train_loss``, ``lr``, ...) with
  step = epoch, then the summary (``best_valid_auc``, ``best_epoch``, ``epochs_run``,
  ``train_seconds_total``, ...) at step 0;
- artifacts: the run folder's small files (``RUN_FILES``), never its weights;
- tags: ``mmctr.version`` (the mmctr that logged it), ``mmctr.run_dir`` and the caller's.

An experiment (or a search) is a parent run whose jobs are its child runs (the tag
``mlflow.parentRunId``): ``Tracking.child_of`` or ``start_parent`` give the ``Tracking`` its
jobs are logged with. Everything goes through an explicit ``MlflowClient`` made from a
``Tracking``, a frozen, picklable value, never through MLflow's global "active run", so that
runs in threads and worker processes do not clash.
"""

from __future__ import annotations

import json
import re
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from mmctr.config import Config
from mmctr.errors import ConfigError
from mmctr.training.mlflow_store import (
    check_reachable,
    experiment_id,
    mlflow_client,
    sqlite_folder,
)
from mmctr.training.summary import RunSummary
from mmctr.version import mmctr_version

if TYPE_CHECKING:
    from mlflow import MlflowClient

# what a run folder's MLflow run keeps of it (the .pt weights never)
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "result.json", "train.log",
             "error.log")  # fmt: skip
PARENT_TAG = "mlflow.parentRunId"
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")  # two letters at least: C:\ is a path
_MAX_PARAMS, _MAX_METRICS = 100, 1000  # MLflow's limits on one log_batch


@dataclass(frozen=True)
class Tracking:
    """Where runs are tracked: handed to worker processes, so plain strings only."""

    uri: str  # the tracking URI MLflow is given: sqlite:///..., http(s)://..., file:...
    artifact_location: str | None  # a new experiment's artifact root (None: the store's own)
    experiment: str = "mmctr"  # the MLflow experiment's name
    parent_run_id: str | None = None  # runs logged with this are child runs of that run

    @classmethod
    def parse(cls, text: str, experiment: str = "mmctr") -> Tracking:
        """A ``--track`` value: a URI with a scheme as is; a plain path is a folder holding a
        SQLite store (``mlflow.db``) and its artifacts (``artifacts/``). Touches nothing."""
        if not text.strip():
            raise ConfigError("--track: expected a folder or a tracking URI, got nothing")
        if not experiment.strip():
            raise ConfigError("--track-experiment: expected a name, got nothing")
        if not _SCHEME.match(text):
            folder = Path(text).expanduser().resolve()
            uri = f"sqlite:///{folder / 'mlflow.db'}"
            return cls(uri, (folder / "artifacts").as_uri(), experiment)
        # SQLite's artifacts beside its file, never in ./mlruns; a server chooses for itself
        db_folder = sqlite_folder(text)
        artifacts = None if db_folder is None else (db_folder / "artifacts").as_uri()
        return cls(text, artifacts, experiment)

    @classmethod
    def from_flag(cls, text: str, experiment: str = "mmctr") -> Tracking:
        """``parse``, then fail now rather than after training: the mlflow package must be
        installed and the store reachable; a folder is made and the experiment created."""
        tracking = cls.parse(text, experiment)
        mlflow_client(tracking.uri)  # ConfigError naming the extra, before any folder is made
        if not _SCHEME.match(text):
            Path(text).expanduser().resolve().mkdir(parents=True, exist_ok=True)
        check_reachable(tracking.uri)
        client = tracking.client()
        experiment_id(client, tracking.experiment, tracking.artifact_location, tracking.uri)
        return tracking

    def client(self) -> MlflowClient:
        return mlflow_client(self.uri)

    def child_of(self, run_id: str) -> Tracking:
        """This tracking with the runs it logs made children of run ``run_id``."""
        return replace(self, parent_run_id=run_id)


class TrackedRun:
    """An open MLflow run: the training loop's ``Monitor`` (each epoch's numbers, step =
    epoch), plus metrics, params and tags from whoever holds it."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id
        self.status = "FINISHED"  # how the run ends when its block ends without an exception
        self.epochs_logged: set[int] = set()

    def epoch(self, epoch: int, step_losses: torch.Tensor, record: dict[str, Any]) -> None:
        self.log_metrics({k: v for k, v in record.items() if k != "epoch"}, step=epoch)
        self.epochs_logged.add(epoch)

    def log_metrics(self, metrics: Mapping[str, Any], step: int = 0) -> None:
        """The numbers among ``metrics`` (bools as 0/1); None, text and the like are skipped."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        numbers = [Metric(k, float(v), now, step) for k, v in metrics.items() if _is_number(v)]
        for i in range(0, len(numbers), _MAX_METRICS):
            self.client.log_batch(self.run_id, metrics=numbers[i : i + _MAX_METRICS])

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params as strings: text as is, anything else as JSON."""
        from mlflow.entities import Param

        items = [Param(k, v if isinstance(v, str) else json.dumps(v)) for k, v in params.items()]
        for i in range(0, len(items), _MAX_PARAMS):
            self.client.log_batch(self.run_id, params=items[i : i + _MAX_PARAMS])

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_files(self, folder: Path, names: Iterable[str]) -> None:
        """The files ``names`` of ``folder`` that exist, as artifacts at the top level."""
        for name in names:
            if (folder / name).is_file():
                self.client.log_artifact(self.run_id, str(folder / name))

    def mark_failed(self, reason: str) -> None:
        """End as FAILED although no exception left the block (a failure recorded, not raised)."""
        self.status = "FAILED"
        self.set_tags({"mmctr.error": reason[:5000]})


def config_params(config: Config) -> dict[str, Any]:
    """The config as ``section.key`` (``section.sub.key``) names and their values."""

    def flat(table: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for key, value in table.items():
            if isinstance(value, Mapping):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value

    return dict(flat(config.to_dict(), ""))


@contextmanager
def tracked_run(
    tracking: Tracking,
    run_name: str,
    config: Config | None = None,
    run_dir: str | Path | None = None,
    *,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
    files: Iterable[str] = RUN_FILES,
) -> Iterator[TrackedRun]:
    """An MLflow run for the block: ``config`` (and ``params``) logged on entry; on exit the
    epochs of ``run_dir``'s metrics.jsonl not logged live (a resumed or read-back run), its
    summary.json as metrics and its ``files`` as artifacts. It ends FINISHED (or as
    ``mark_failed`` says); FAILED on an exception (KILLED on Ctrl-C), which goes on up."""
    all_params = {**(config_params(config) if config else {}), **(params or {})}
    run = _start(tracking, run_name, all_params, tags, run_dir)
    folder = None if run_dir is None else Path(run_dir)
    try:
        yield run
    except BaseException as exc:
        _end_after_error(run, folder, files, exc)
        raise
    if folder is not None:
        _log_history(run, folder / "metrics.jsonl")
        _log_summary(run, folder / "summary.json")
        run.log_files(folder, files)
    run.client.set_terminated(run.run_id, run.status)


def start_parent(
    tracking: Tracking,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    tags: Mapping[str, Any] | None = None,
) -> Tracking:
    """Open a parent run ``name`` (an experiment, a study); the ``Tracking`` returned logs runs
    as its children. ``end_parent`` closes it."""
    return tracking.child_of(_start(tracking, name, params or {}, tags, None).run_id)


def end_parent(
    tracking: Tracking,
    status: str = "FINISHED",
    *,
    folder: str | Path | None = None,
    files: Iterable[str] = (),
) -> None:
    """End the parent run of ``tracking`` (FINISHED, FAILED or KILLED), first logging
    ``files`` of ``folder`` as its artifacts."""
    if tracking.parent_run_id is None:
        raise ValueError("end_parent: this Tracking has no parent run (see start_parent)")
    run = TrackedRun(tracking.client(), tracking.parent_run_id)
    if folder is not None:
        run.log_files(Path(folder), files)
    run.client.set_terminated(run.run_id, status)


def _start(
    tracking: Tracking,
    name: str,
    params: Mapping[str, Any],
    tags: Mapping[str, Any] | None,
    run_dir: str | Path | None,
) -> TrackedRun:
    client = tracking.client()
    exp_id = experiment_id(client, tracking.experiment, tracking.artifact_location, tracking.uri)
    all_tags = {
        "mmctr.version": mmctr_version(),
        **{str(k): str(v) for k, v in (tags or {}).items()},
    }
    if tracking.parent_run_id is not None:
        all_tags[PARENT_TAG] = tracking.parent_run_id
    if run_dir is not None:
        all_tags["mmctr.run_dir"] = str(Path(run_dir).resolve())
    run = TrackedRun(client, client.create_run(exp_id, run_name=name, tags=all_tags).info.run_id)
    run.log_params(params)
    return run


def _end_after_error(
    run: TrackedRun, folder: Path | None, files: Iterable[str], exc: BaseException
) -> None:
    """FAILED (KILLED on Ctrl-C) with the traceback; what the folder holds is logged as far
    as the store allows, the exception being what matters."""
    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    try:
        run.set_tags({"mmctr.error": f"{type(exc).__name__}: {exc}"[:5000]})
        run.client.log_text(run.run_id, traceback.format_exc(), "traceback.txt")
        if folder is not None:
            _log_history(run, folder / "metrics.jsonl")
            run.log_files(folder, files)
    finally:
        run.client.set_terminated(run.run_id, status)


def _log_history(run: TrackedRun, path: Path) -> None:
    """Epoch records of metrics.jsonl that were not logged live."""
    if not path.is_file():
        return
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:  # a line cut short by a kill: the file is rewritten on resume
            continue
        epoch = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epoch, int) and epoch not in run.epochs_logged:
            run.epoch(epoch, torch.empty(0), record)


def _log_summary(run: TrackedRun, path: Path) -> None:
    """summary.json's numbers (its total training time as ``train_seconds_total``: the
    epochs' ``train_seconds`` is another curve)."""
    if not path.is_file():
        return
    summary = RunSummary.read(path)
    best = summary.best_valid
    run.log_metrics({
        "best_valid_auc": best.auc, "best_valid_logloss": best.logloss,
        "best_valid_gauc": best.gauc, "best_epoch": summary.best_epoch,
        "epochs_run": summary.epochs_run, "train_seconds_total": summary.train_seconds,
        "stopped_early": summary.stopped_early,
    })  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float))
