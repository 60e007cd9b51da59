"""The Python face, for notebooks and scripts: the same functions the command line calls.

    import mmctr
    result = mmctr.train("data/demo", "cpu", "runs/nb")       # like `mmctr train`
    scorer = mmctr.load_run("runs/nb", "data/demo")            # the best model, ready to score
    scorer.evaluate("valid")                                   # {"auc": ..., "logloss": ..., ...}
    probs = scorer.score(history=[[12, 7, 33]], target=[5], context=[[3, 1]])

``load_run`` is the one way in for inference: the checkpoint, its config and data schema, the
item table (tags and frozen embeddings) the run keeps (``training/run_items.py``; a data folder,
when given, is checked against it), on a device. Scores come from ``training.inference``, as
during training's validation.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmctr import items as new_items
from mmctr.config import Config
from mmctr.data import DataSchema, ItemTable, Split, load_dataset, target_counts
from mmctr.errors import CheckpointError
from mmctr.logs import logger
from mmctr.model import CTRModel
from mmctr.training import checkpoint as ckpt
from mmctr.training import distributed
from mmctr.training import run as runs
from mmctr.training.inference import attach_items, autocast, predict_probs, resolve_device
from mmctr.training.loop import Log, Monitor
from mmctr.training.metrics import split_report
from mmctr.training.precision import for_inference
from mmctr.training.run_items import scoring_items
from mmctr.training.summary import RunSummary

IdList = Sequence[int] | np.ndarray
Group = tuple[IdList, IdList, IdList]
"""One user's (history ids oldest first, context levels, candidate ids) for ``score_groups``."""
_log = logger("training")


def train(
    data_dir: str | Path,
    config: Config | str | Path,
    out: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool | None = None,
    log: Log = _log.info,
    monitor: Monitor | None = None,
) -> RunSummary:
    """Train ``config`` (a Config, a TOML file or a shipped preset name) on ``data_dir``'s train
    split, stopping on valid, into the run directory ``out`` (``training/run.py`` owns the
    run: lock, checks, seeding, building the model). Lines go to ``log`` (by default the
    ``mmctr.training`` logger, shown once the caller configures ``logging``) and train.log."""
    config = runs.resolve_config(out, config, list(overrides), resume=False)
    if not distributed.current().is_main:
        log = runs.silent
    t0 = time.perf_counter()
    data = load_dataset(data_dir, config.data, ("train", "valid"), stream_train=True)
    train = f"{len(data.rows('train')):,} train" + (" (streamed)" if data.streams else "")
    log(
        f"loaded {train} / {len(data['valid']):,} valid rows from {data_dir}"
        f" in {time.perf_counter() - t0:.1f}s (schema {data.schema.fingerprint})"
    )
    trained = runs.train(
        data, config, out, resume=resume, progress=progress, log=log, monitor=monitor
    )
    return trained.summary


@dataclass
class Scorer:
    """A trained model with the item table it scores against, in eval mode on ``device``."""

    model: CTRModel
    config: Config
    schema: DataSchema
    items: ItemTable  # the trained items (rows 0 .. schema.num_items - 1)
    data_dir: Path | None  # the data folder the splits are read from; None: no splits
    device: torch.device
    precision: str = "fp32"  # how ``model`` scores: fp32, bf16 weights or int8 Linear layers
    parameter_count: int = 0  # of the trained model (an int8 model hides its Linear weights)

    def split(self, name: str, *, require_labels: bool = False) -> Split:
        """A split of the data folder, checked against the model's schema."""
        data = load_dataset(self._data_dir(), self.config.data, (name,), schema=self.schema,
                            require_labels=require_labels, items=self.items)  # fmt: skip
        return data[name]  # the items were read and checked by load_run

    def predict(
        self, split: str | Split = "test", *, progress: bool = False, logits: bool = False
    ) -> np.ndarray:
        """Click probabilities of every row of a split (a name or a loaded one), in file order;
        with ``logits`` the model's logits instead (what an ensemble averages)."""
        rows = self.split(split) if isinstance(split, str) else split
        batch_size = self.config.train.eval_batch_size
        return predict_probs(self.model, rows, batch_size, progress=progress, logits=logits)

    def evaluate(self, split: str | Split = "valid") -> dict[str, float]:
        """AUC, logloss and gAUC on a labelled split (a name or a loaded one)."""
        return self.report(split)

    def train_target_counts(self) -> np.ndarray:
        """How many train rows have each item as their target: (num_items,) ints."""
        return target_counts(self._data_dir(), "train", self.config.data, self.num_items)

    def _data_dir(self) -> Path:
        if self.data_dir is None:
            raise CheckpointError("no data folder to read rows from: give load_run a data_dir")
        return self.data_dir

    def evaluate_by_item_frequency(
        self, split: str | Split = "valid", *, train_counts: np.ndarray | None = None
    ) -> list[dict[str, Any]]:
        """``evaluate`` per bucket of the target item's train occurrences (unseen, 1-5, 6-50,
        >50): how the model does on cold items. ``train_counts`` defaults to this data's."""
        counts = self.train_target_counts() if train_counts is None else train_counts
        return list(self.report(split, counts)["by_item_frequency"])

    def report(self, split: str | Split = "valid", counts: np.ndarray | None = None) -> dict:
        """``evaluate`` from one pass of predictions, plus its buckets under "by_item_frequency"
        when ``counts`` (each item's train-target occurrences: train_target_counts()) is given."""
        rows = self.split(split, require_labels=True) if isinstance(split, str) else split
        if rows.labels is None:
            raise CheckpointError(f"split {rows.name!r} has no labels to evaluate against")
        per_row = None if counts is None else counts[rows.target]
        return split_report(rows.users, rows.labels, self.predict(rows), per_row)

    @property
    def num_items(self) -> int:
        """Items this scorer knows: the trained ones and any new ones added since."""
        return self.model.items.num_items

    def add_items(
        self, tags: Any, emb: Any, levels: Any = None, room: int = 0, first: int | None = None
    ) -> np.ndarray:
        """Register new items (cold start): (M, T) tag ids, (M, D) frozen embeddings and (M, C)
        item features in ``schema.item_feature_cols`` order (None: all 0, unknown).

        Returns their ids, the next free ones, or ``first`` on (those held already skipped);
        ``room``: rows to keep free for later ones (``ItemEncoder.append_items``). They score
        from their tags, features and embedding with the zero id row; nothing is written
        (``mmctr items add`` and a server keep them: ``training/registration.py``)."""
        rows = new_items.check_for_schema(self.schema, tags, emb, levels, where="new items")
        tensors = (torch.from_numpy(a) for a in rows)
        start = self.model.items.append_items(*tensors, room=room, first=first)
        return np.arange(start, start + len(rows[0]))

    @torch.inference_mode()
    def score(self, history: Any, target: Any, context: Any, *, logits: bool = False) -> np.ndarray:
        """Click probabilities of plain arrays, no parquet involved.

        ``history``: (B, L) item ids, oldest first and left-padded with 0, or B lists of ids
        (oldest first, any lengths); ``target``: (B,) item ids; ``context``: (B, F) levels in
        the order of ``config.data.context_cols``. Ids outside the model's vocabularies raise
        ValueError naming the argument. ``logits``: the logits instead of probabilities.
        """
        return self._forward(*self._tensors(history, target, context), logits=logits)

    @torch.inference_mode()
    def score_groups(self, groups: Sequence[Group], *, logits: bool = False) -> list[np.ndarray]:
        """One forward pass for several users, each a history scored against many candidates.

        A group is (history ids oldest first, context levels in ``config.data.context_cols``
        order, candidate ids); the result is one probability array per group, in candidate
        order. Each history is encoded once and its share of the work done once for all its
        candidates (``forward_groups``), which is what a ranking service wants: a few hundred
        candidates share one history. Every history is left-padded to at least the model's
        ``max_len``, so a group's scores do not depend on the other groups it is scored with
        (the model reads the same window either way).
        """
        if not groups:
            return []
        counts = np.fromiter((len(g[2]) for g in groups), dtype=np.int64, count=len(groups))
        width = max(self.model.cfg.max_len, max(len(g[0]) for g in groups), 1)
        hist = np.zeros((len(groups), width), dtype=np.int64)
        for i, (history, _, _) in enumerate(groups):
            if len(history):
                hist[i, width - len(history) :] = history
        ctx = np.asarray([g[1] for g in groups], dtype=np.int64).reshape(len(groups), -1)
        tgt = np.concatenate([np.asarray(g[2], dtype=np.int64) for g in groups])
        self._check(hist, tgt, ctx)
        group = torch.repeat_interleave(torch.arange(len(groups)), torch.from_numpy(counts))
        inputs = (torch.from_numpy(hist), group, torch.from_numpy(tgt), torch.from_numpy(ctx))
        probs = self._forward(*inputs, grouped=True, logits=logits)
        return np.split(probs, np.cumsum(counts)[:-1])

    def _forward(
        self, *inputs: torch.Tensor, grouped: bool = False, logits: bool = False
    ) -> np.ndarray:
        """Probabilities (or ``logits``) of ``model(history, target, context)``, or with
        ``grouped`` of ``model.forward_groups(history, group, target, context)``."""
        self.model.eval()
        on_device = [t.to(self.device) for t in inputs]
        with autocast(self.device, "fp32"):
            out = self.model.forward_groups(*on_device) if grouped else self.model(*on_device)
        return (out.float() if logits else torch.sigmoid(out.float())).cpu().numpy()

    def _tensors(
        self, history: Any, target: Any, context: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tgt = _int_array(target, "target", ndim=1)
        hist = _left_padded(history) if _is_ragged(history) else _int_array(history, "history", 2)
        ctx = _int_array(context, "context", ndim=2)
        rows = len(tgt)
        if hist.shape[0] != rows or ctx.shape[0] != rows:
            raise ValueError(
                f"history has {hist.shape[0]} rows, target {rows}, context {ctx.shape[0]}: "
                "give one row per scored pair"
            )
        self._check(hist, tgt, ctx)
        return tuple(torch.from_numpy(a) for a in (hist, tgt, ctx))  # type: ignore[return-value]

    def _check(self, hist: np.ndarray, tgt: np.ndarray, ctx: np.ndarray) -> None:
        """ValueError naming the argument when an id is outside the model's vocabularies."""
        _check_range(hist, self.num_items, "history", "item id")
        _check_range(tgt, self.num_items, "target", "item id")
        vocab = self.schema.context_vocab_sizes
        if ctx.shape[1] != len(vocab):
            cols = ", ".join(self.config.data.context_cols)
            raise ValueError(f"context has {ctx.shape[1]} columns; the model reads {cols}")
        for j, (name, size) in enumerate(zip(self.config.data.context_cols, vocab, strict=True)):
            _check_range(ctx[:, j], size, f"context column {name}", "level")


def load_run(
    run_dir: str | Path,
    data_dir: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    items: ItemTable | None = None,
    precision: str = "fp32",
) -> Scorer:
    """The best model of a run with the item table it keeps (and its registered items), ready.

    ``data_dir``: the data folder that ``split``/``predict``/``evaluate`` read rows from, checked
    against the run; a run written before runs kept their table needs it for its item_info.
    ``items``: its table already read with the run's schema (the experiment runner). ``device``
    defaults to ``train.device``; ``precision``: ``fp32``, ``bf16`` or ``int8`` (CPU only).
    """
    trained = ckpt.load_trained(run_dir)
    table = scoring_items(run_dir, trained.schema, trained.config.data, data_dir, items)
    where = device if device is not None else trained.config.train.device
    target = where if isinstance(where, torch.device) else resolve_device(where)
    trained.model.to(target)
    attach_items(trained.model, table.items, held_out=table.held_out)
    count = sum(p.numel() for p in trained.model.parameters())
    model = for_inference(trained.model.eval(), precision)
    scorer = Scorer(model, trained.config, trained.schema, table.items,
                    Path(data_dir) if data_dir else None, target, precision, count)  # fmt: skip
    if table.num_registered:
        scorer.add_items(*table.registered)
    return scorer


def _is_ragged(history: Any) -> bool:
    return isinstance(history, (list, tuple)) and all(
        isinstance(row, (list, tuple)) for row in history
    )


def _left_padded(rows: Sequence[Sequence[int]]) -> np.ndarray:
    width = max((len(row) for row in rows), default=0)
    out = np.zeros((len(rows), max(width, 1)), dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row):
            out[i, width - len(row) :] = _int_array(row, f"history[{i}]", ndim=1)
    return out


def _int_array(values: Any, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer ids, got {array.dtype}")
    return array.astype(np.int64, copy=False)


def _check_range(array: np.ndarray, size: int, name: str, what: str) -> None:
    bad = np.flatnonzero((array < 0) | (array >= size))
    if bad.size:
        raise ValueError(
            f"{name}: {what} {int(array.flat[bad[0]])} is outside the model's vocabulary "
            f"0..{size - 1}"
        )


__all__ = ["Group", "Scorer", "load_run", "train"]
