"""What a server is told (limits, address) and what it serves (a loaded run with its id)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmctr.api import Scorer, load_run
from mmctr.ensemble import EnsembleScorer, load_ensemble
from mmctr.errors import ConfigError
from mmctr.training.precision import INFERENCE_PRECISIONS

QUEUE_BATCHES = 4  # the default bound on rows in flight (--max-queue-rows), in full passes


@dataclass(frozen=True)
class ServeSettings:
    """Everything ``mmctr serve`` takes; plain values so that uvicorn workers get it as JSON.

    ``max_history`` 0 means the stored history length of the run's data (``schema.seq_len``):
    what the model saw in training. Longer histories are refused rather than cut, so that a
    caller learns its input was not what the model read.

    An ensemble (``mmctr serve --run A --run B``) has every run dir in ``runs`` (``run`` is the
    first) and its ``weights``: "mean", "fitted" (on the data's valid split) or one number a
    run, comma-separated. One run leaves ``runs`` empty, as before ensembles.
    """

    run: str
    data: str | None = None  # the data folder, checked against the run; None: the run's own table
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int = 0  # torch threads per worker; 0 = the cores divided among the workers
    device: str = "cpu"
    max_batch: int = 2048  # (history, candidate) rows in one forward pass
    max_wait_ms: float = 2.0  # how long the first request of a batch waits for company
    max_candidates: int = 1000
    max_history: int = 0
    max_users: int = 64  # entries of one /v1/score/batch request
    max_body_bytes: int = 1 << 20
    model_process: bool = False  # score in a child process (the CLI's default; worker.py)
    precision: str = "fp32"  # fp32, bf16 (bfloat16 weights) or int8 (quantised Linear layers)
    runs: tuple[str, ...] = ()  # every run of an ensemble, ``run`` first; empty: one run
    weights: str = "mean"  # an ensemble's: mean, fitted, or "0.7,0.3"
    max_queue_rows: int = 0  # rows queued or being scored; 0 = QUEUE_BATCHES x max_batch
    deadline_ms: float = 1000.0  # from a request's arrival to its answer; past it 503
    model_timeout_ms: float = 5000.0  # one call into the model process; past it, replaced
    max_new_items: int = 10_000  # items registered with the run in all (POST /v1/items)
    token_file: str | None = None  # the bearer token's file (access.py); None: MMCTR_SERVE_TOKEN
    token_all: bool = False  # the token on every route but the probes, not only on writes
    docs: bool = False  # /docs, /redoc and /openapi.json

    @property
    def run_dirs(self) -> tuple[str, ...]:
        """The runs served: ``(run,)``, or an ensemble's."""
        return self.runs or (self.run,)

    @property
    def queue_rows(self) -> int:
        """The bound on rows queued or being scored (docs/serving.md, Overload)."""
        return self.max_queue_rows or QUEUE_BATCHES * self.max_batch

    def __post_init__(self) -> None:
        object.__setattr__(self, "runs", tuple(self.runs))  # JSON gives a list
        if self.runs and (len(self.runs) < 2 or self.runs[0] != self.run):
            raise ConfigError("serve: runs holds an ensemble's runs, run first, or nothing")
        if len(self.run_dirs) < 2 and self.weights != "mean":
            raise ConfigError("serve: --weights is for an ensemble: give --run twice or more")
        if self.runs:
            ensemble_weights(self.weights)  # a malformed --weights: refused before loading
        if self.weights == "fitted" and self.data is None:
            raise ConfigError("serve: --weights fitted fits on the data's valid split: give --data")
        positive = ("port", "workers", "max_batch", "max_candidates", "max_users")
        for name in positive:
            if getattr(self, name) < (0 if name == "port" else 1):
                raise ConfigError(f"serve: --{name.replace('_', '-')} must be positive")
        if min(self.max_wait_ms, self.threads, self.max_history, self.max_new_items) < 0:
            raise ConfigError(
                "serve: --max-wait-ms, --threads, --max-history and --max-new-items must be >= 0"
            )
        if self.max_candidates > self.max_batch:
            raise ConfigError(
                f"serve: --max-candidates {self.max_candidates} exceeds --max-batch "
                f"{self.max_batch}; one request must fit in one forward pass"
            )
        if self.precision not in INFERENCE_PRECISIONS:
            raise ConfigError(
                f"serve: --precision {self.precision!r}: choose {', '.join(INFERENCE_PRECISIONS)}"
            )
        if self.max_body_bytes < 1024:
            raise ConfigError("serve: --max-body-bytes must be at least 1024")
        _check_overload(self)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ServeSettings:
        return cls(**json.loads(text))


@dataclass
class Served:
    """A loaded run as the service sees it: the scorer, its id, and the limits in force.

    A reload (reload.py) swaps ``scorer``, ``run_id`` and ``settings`` in place, between
    scoring passes, and counts ``generation`` up; whatever reads them reads them per request."""

    scorer: Scorer | EnsembleScorer
    run_id: str
    settings: ServeSettings
    generation: int = 1  # 1 for the run loaded at start, one more for each reload
    loaded_at: str = field(default_factory=lambda: utc_now())  # when this run began answering

    @property
    def max_history(self) -> int:
        return self.settings.max_history or self.scorer.schema.seq_len

    def describe(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers: enough for a caller to build valid requests. No
        file paths: the run is named by its id (folder name and weights' digest)."""
        schema = self.scorer.schema
        scorer = self.scorer
        if isinstance(scorer, EnsembleScorer):
            members = zip(scorer.members, scorer.runs, scorer.weights, strict=True)
            model = {
                "kind": "ensemble",
                "parameters": scorer.parameter_count,
                "device": str(scorer.device),
                "precision": scorer.precision,
                "members": [
                    {"run": run_id(run), "weight": float(w), **_model(m)} for m, run, w in members
                ],
            }
        else:
            model = _model(scorer)
        return {
            "run": self.run_id,
            "generation": self.generation,
            "loaded_at": self.loaded_at,
            "model": model,
            "vocab": {
                "items": schema.num_items,
                "tags": schema.num_tags,
                "context": dict(zip(schema.context_cols, schema.context_vocab_sizes, strict=True)),
            },
            "context_columns": list(schema.context_cols),
            "schema_fingerprint": schema.fingerprint,
            "limits": {
                "max_history": self.max_history,
                "max_candidates": self.settings.max_candidates,
                "max_users": self.settings.max_users,
                "max_body_bytes": self.settings.max_body_bytes,
                "max_batch": self.settings.max_batch,
                "max_wait_ms": self.settings.max_wait_ms,
                "max_queue_rows": self.settings.queue_rows,
                "deadline_ms": self.settings.deadline_ms,
                "max_new_items": self.settings.max_new_items,
            },
        }


def utc_now() -> str:
    """The time now, UTC, to the second, as ISO 8601 (``2026-12-06T16:40:00Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def warm_up(served: Served) -> None:
    """One pass before the first request, so that it does not pay for torch's first call."""
    item = min(1, served.scorer.schema.num_items - 1)
    levels = [0] * len(served.scorer.schema.context_cols)
    served.scorer.score_groups([([item], levels, [item])])


def _check_overload(settings: ServeSettings) -> None:
    """The queue bound holds at least one full pass; the deadlines are positive."""
    if settings.deadline_ms <= 0 or settings.model_timeout_ms <= 0:
        raise ConfigError("serve: --deadline-ms and --model-timeout-ms must be positive")
    if settings.max_queue_rows and settings.max_queue_rows < settings.max_batch:
        raise ConfigError(
            f"serve: --max-queue-rows {settings.max_queue_rows} is below --max-batch "
            f"{settings.max_batch}; the queue must hold at least one full pass"
        )


def _model(scorer: Scorer) -> dict[str, Any]:
    cfg = scorer.config.model
    return {
        "kind": cfg.kind,
        "parameters": scorer.parameter_count,
        "max_len": cfg.max_len,
        "mask": scorer.model.mask,
        "use_multimodal": cfg.use_multimodal,
        "device": str(scorer.device),
        "precision": scorer.precision,
    }


def run_id(run_dir: Path) -> str:
    """The run folder's name and the first 12 hex digits of its model.pt's SHA-256: which
    weights answered, even after a run folder is retrained in place."""
    digest = hashlib.sha256()
    with (run_dir / "model.pt").open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"{run_dir.resolve().name}@{digest.hexdigest()[:12]}"


def load_served(settings: ServeSettings) -> Served:
    """Load the run, or the ensemble of runs (CheckpointError / DataError on a bad folder, a
    ConfigError on runs of different data), for serving. An ensemble's id joins its runs'."""
    if not settings.runs:
        scorer = load_run(
            settings.run, settings.data, device=settings.device, precision=settings.precision
        )
        return Served(scorer, run_id(Path(settings.run)), settings)
    ensemble = load_ensemble(
        settings.runs, settings.data, ensemble_weights(settings.weights),
        device=settings.device, precision=settings.precision,
    )  # fmt: skip
    return Served(ensemble, "+".join(run_id(Path(r)) for r in settings.runs), settings)


def ensemble_weights(text: str) -> str | list[float]:
    """``--weights``: mean, fitted, or one number a run, comma-separated."""
    if text in ("mean", "fitted"):
        return text
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(
            f"serve: --weights {text!r}: give mean, fitted or one number a run (0.7,0.3)"
        ) from None
