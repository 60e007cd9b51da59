"""The fixed-layout scoring graph that ``mmctr export`` writes, and the inputs it expects.

A trained model reads a window of each history whose width can depend on the batch (trimming
all-padding columns) and packs real tokens into buckets (token packing): exact speed paths,
but with data-dependent shapes that an exported graph cannot hold. The graph here runs the
model at its full window (``CTRModel.full_window``), so that every batch has the same layout:
``(B, W)`` history ids where W is the width of the model's window over ``max_len`` positions
(``max_len``, or ``first_k`` if that is larger). Both paths are exact, so the scores do not
change.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from mmctr.api import Scorer
from mmctr.model import CTRModel

INPUT_NAMES = ("history", "target", "context")
OUTPUT_NAMES = ("prob", "logit")


class ScoringGraph(nn.Module):
    """A trained model with its item table, returning click probabilities and logits.

    Shape: history (B, W), target (B,), context (B, F) int64 ids -> prob (B,), logit (B,)
    float32. The item table (tags and frozen embeddings of every item) is in the model's
    buffers, so the exported file needs no data folder.
    """

    def __init__(self, model: CTRModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, history: torch.Tensor, target: torch.Tensor, context: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        logit = self.model(history, target, context).float()
        return torch.sigmoid(logit), logit


@dataclass(frozen=True)
class Interface:
    """What a caller of an exported graph needs to know; also stored inside the file."""

    history_width: int  # W: columns of ``history``, the last W items, left-padded with 0
    context_cols: tuple[str, ...]  # the columns of ``context``, in order
    context_vocab_sizes: tuple[int, ...]  # levels 0..size-1 of each context column
    num_items: int  # item ids 0..num_items-1 (0 is padding)
    model_kind: str
    mask: str
    schema_fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "inputs": {
                "history": ["batch", self.history_width, "int64"],
                "target": ["batch", "int64"],
                "context": ["batch", len(self.context_cols), "int64"],
            },
            "outputs": {"prob": ["batch", "float32"], "logit": ["batch", "float32"]},
            "history_width": self.history_width,
            "context_cols": list(self.context_cols),
            "context_vocab_sizes": list(self.context_vocab_sizes),
            "num_items": self.num_items,
            "model_kind": self.model_kind,
            "mask": self.mask,
            "schema_fingerprint": self.schema_fingerprint,
        }


def fixed_layout_graph(scorer: Scorer) -> ScoringGraph:
    """A CPU float32 copy of the scorer's model in eval mode, at its full window.

    A copy, so that the scorer keeps its fast paths; its item buffers come along.
    """
    model = copy.deepcopy(scorer.model).to(device="cpu", dtype=torch.float32).eval()
    model.set_execution(model.execution.replace(trim_padding=False, pack_tokens=False))
    for p in model.parameters():
        p.requires_grad_(False)
    return ScoringGraph(model).eval()


def history_width(model: CTRModel) -> int:
    """W: the width of the model's window over a full ``max_len`` history, trimming off."""
    with model.full_window():
        probe = torch.zeros(1, model.cfg.max_len, dtype=torch.long, device="cpu")
        return int(model.window(probe).shape[1])


def interface(scorer: Scorer) -> Interface:
    return Interface(
        history_width=history_width(scorer.model),
        context_cols=tuple(scorer.config.data.context_cols),
        context_vocab_sizes=tuple(scorer.schema.context_vocab_sizes),
        num_items=scorer.schema.num_items,
        model_kind=scorer.config.model.kind,
        mask=scorer.model.mask,
        schema_fingerprint=scorer.schema.fingerprint,
    )


def fit_history(model: CTRModel, history: np.ndarray) -> np.ndarray:
    """Stored histories of any width (left-padded with 0) as the graph's (B, W) input.

    The model cuts them, as ``predict`` does: its window with trimming off, so the result has
    W columns for every batch. Histories narrower than ``max_len`` are first left-padded,
    which is exact where padding is inert (``CTRModel.padding_inert``).
    """
    ids = torch.from_numpy(np.ascontiguousarray(history, dtype=np.int64))
    short = model.cfg.max_len - ids.shape[1]
    if short > 0:
        ids = torch.nn.functional.pad(ids, (short, 0))
    with model.full_window():
        return model.window(ids).numpy().copy()


def example_inputs(iface: Interface, batch: int = 4) -> tuple[torch.Tensor, ...]:
    """Inputs of the graph's layout for tracing: a few real-looking ids, some padding.

    A batch above 1, so that the exporters keep the batch size symbolic.
    """
    gen = torch.Generator().manual_seed(0)
    history = torch.randint(1, iface.num_items, (batch, iface.history_width), generator=gen)
    history[:, : iface.history_width // 2] = 0  # left padding, as in real rows
    target = torch.randint(1, iface.num_items, (batch,), generator=gen)
    context = (
        torch.stack(
            [torch.randint(0, size, (batch,), generator=gen) for size in iface.context_vocab_sizes],
            dim=1,
        )
        if iface.context_vocab_sizes
        else torch.zeros(batch, 0, dtype=torch.long)
    )
    return history, target, context
