"""The files of a run directory, written atomically, and loading a trained model back.

RUN_DIR/
    config.json     the full config the run uses, and the mmctr version that last started it
    state.pt        resume state after the last finished epoch: weights, optimizer, TrainState
    state.json      the same TrainState as JSON (epoch, best, bad epochs, lr, history)
    model.pt        best weights so far, with config and data schema (what evaluate/predict use)
    items.npz       the item table the run is trained with, and its registered items (bundle.py)
    metrics.jsonl   one JSON object per finished epoch
    summary.json    written when the run ends (with the mmctr version that finished it); its
                    presence marks the run finished
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmctr.atomic import atomic_path, write_json, write_text
from mmctr.config import Config
from mmctr.data.schema import DataSchema
from mmctr.errors import CheckpointError, StorageError
from mmctr.model.base import CTRModel
from mmctr.model.factory import build_model
from mmctr.training.state import TrainState
from mmctr.training.summary import RunSummary
from mmctr.version import RECORD_KEY, mmctr_version

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def state(self) -> Path:
        return self.root / "state.pt"

    @property
    def state_json(self) -> Path:
        return self.root / "state.json"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    def has_run(self) -> bool:
        return self.state.exists() or self.model.exists() or self.summary.exists()

    def finished(self) -> bool:
        return self.summary.exists()


def save(obj: dict[str, Any], path: Path) -> None:
    """Write a checkpoint of tensors and plain data (dicts, lists, str, numbers) atomically."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as exc:  # torch's file writer reports a full disk this way
            raise StorageError(
                f"{path}: writing the checkpoint failed ({exc}); the previous one is intact"
            ) from None


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint without running code: ``weights_only`` unpickling admits tensors and
    plain data only, so a file carrying any other Python object is refused, never executed."""
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = _refusal_reason(str(exc))
        if not any(word in first.lower() for word in ("global", "class")):  # damaged bytes
            raise CheckpointError(f"{path}: cannot read checkpoint ({first})") from None
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects other than tensors and plain data, "
            f"and loading them could run code ({first}). mmctr never writes such files; "
            "load it only if you trust where it came from and know what it holds"
        ) from None
    except Exception as exc:  # torch raises many types for a damaged file
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not an mmctr checkpoint of format {FORMAT_VERSION}")
    return obj


def _refusal_reason(message: str) -> str:
    """The line of torch's weights_only refusal that names what the file wanted to load."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    named = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    first = (named or lines or ["refused"])[0]
    return first.split(". ")[0].removeprefix("WeightsUnpickler error: ")[:200]


def save_state(
    run: RunDir,
    state: TrainState,
    model: CTRModel,
    optimizer: torch.optim.Optimizer,
    schema: DataSchema,
) -> None:
    """What resuming needs after an epoch, in one atomic file; then the files derived from it."""
    payload = {
        "format": FORMAT_VERSION,
        "schema": schema.to_dict(),
        "weights": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "train_state": state.to_dict(),
    }
    save(payload, run.state)
    write_state_files(run, state)


def write_state_files(run: RunDir, state: TrainState) -> None:
    """state.json and metrics.jsonl from the TrainState that state.pt holds (state.pt first:
    resuming rewrites these two from it, so a kill in between loses nothing)."""
    write_json(run.state_json, state.to_dict())
    write_metrics(run, state.history)


def train_state_of(saved: dict[str, Any], path: Path) -> TrainState:
    """The TrainState of a loaded state.pt; runs saved before it had a name kept ``counters``."""
    raw = saved.get("train_state", saved.get("counters"))
    return TrainState.from_dict(raw, source=str(path))


def model_payload(
    model: CTRModel, config: Config, schema: DataSchema, **extra: Any
) -> dict[str, Any]:
    return {
        "format": FORMAT_VERSION,
        "config": config.to_dict(),
        "schema": schema.to_dict(),
        "fingerprint": schema.fingerprint,
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
        **extra,
    }


@dataclass(frozen=True)
class TrainedModel:
    model: CTRModel
    config: Config
    schema: DataSchema
    info: dict[str, Any]


def load_trained(run_dir: str | Path) -> TrainedModel:
    """The best model of a run, its config and the schema of the data it was trained on."""
    run = RunDir(Path(run_dir))
    if not run.root.is_dir():
        raise CheckpointError(f"run directory not found: {run.root}")
    if not run.model.exists():
        raise CheckpointError(f"{run.root}: holds no trained model (model.pt); train it first")
    payload = load(run.model)
    config = Config.from_saved(payload["config"], source=str(run.model))
    schema = DataSchema.from_dict(payload["schema"])
    model = build_model(config.model, schema.dims)
    model.load_state_dict(payload["weights"])
    info = {k: v for k, v in payload.items() if k not in ("weights", "config", "schema")}
    return TrainedModel(model=model, config=config, schema=schema, info=info)


def write_metrics(run: RunDir, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.jsonl from the epoch history, so a resumed run never repeats a line."""
    write_text(run.metrics, "".join(json.dumps(h, sort_keys=True) + "\n" for h in history))


def write_config(run: RunDir, config: Config) -> None:
    """config.json: the config, and the version of the mmctr starting (or resuming) the run,
    so that a figure can be traced to the code; ``Config.from_saved`` reads past it."""
    write_json(run.config, {**config.to_dict(), RECORD_KEY: mmctr_version()})


def write_summary(run: RunDir, summary: dict[str, Any]) -> None:
    write_json(run.summary, {"finished": True, **summary})


def read_summary(run: RunDir) -> RunSummary:
    return RunSummary.read(run.summary)
