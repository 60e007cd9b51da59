"""What every CTR model shares with the code around it: its data sizes, its interface and how
it executes.

A model is what its frozen config says; *how* it computes is its ``execution`` (an
``Execution``): speed paths that give the same scores (trimming all-padding columns, packing
real tokens, sharing a history's work among its candidates). A model states which paths it
has (``check_execution``), chooses its default once, and refuses a path it cannot honour
with a ``ValueError``: never a silent fallback. The config is never changed to switch paths.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mmctr.config.dims import DataDims
from mmctr.config.model import MaskMode, ModelConfig
from mmctr.model.item import ContextEncoder, ItemEncoder

__all__ = ["PLAIN", "CTRModel", "DataDims", "Execution"]


@dataclass(frozen=True)
class Execution:
    """How a model computes, never what: every setting gives the same scores (up to float
    rounding), and a model refuses one that it cannot honour."""

    trim_padding: bool = False  # drop the leading columns that are padding in every row
    pack_tokens: bool = False  # per-token layers on real history items only
    share_histories: bool = False  # forward_groups: each history's work done once

    def replace(self, **changes: bool) -> Execution:
        return dataclasses.replace(self, **changes)


PLAIN = Execution()  # the one forward path every model has, read top to bottom


class CTRModel(nn.Module):
    """The interface that training, evaluation, prediction, export and serving rely on.

    A model keeps its config in ``cfg``, owns an ``ItemEncoder`` as ``items`` (the run loads
    the data's item table into it) and maps int ids to click logits; the loss lives in
    training. It takes each row's whole stored history and owns the choice of which positions
    it reads (``window``): nothing outside the model cuts histories.

    A new kind subclasses this, registers itself with ``mmctr.model.register_model`` and
    builds from ``(cfg, dims)``; the rest (training, checkpoints, scoring, export, serving)
    works through this interface alone.

    Shape: history (B, L), target (B,), context (B, F) int ids -> (B,) logits.
    """

    cfg: ModelConfig
    items: ItemEncoder
    context: ContextEncoder
    execution: Execution = PLAIN

    def _init_inputs(self, cfg: ModelConfig, dims: DataDims) -> None:
        """The item and context encoders every model shares; call once from ``__init__``."""
        self.cfg = cfg
        self.items = ItemEncoder(
            id_dim=cfg.id_dim,
            tag_dim=cfg.tag_dim,
            mm_dim=cfg.mm_dim if cfg.use_multimodal else 0,
            mm_projection=cfg.mm_projection,
            beyond=cfg.beyond,
            dims=dims,
            feature_dim=cfg.item_feature_dim,
        )
        self.context = ContextEncoder(
            vocab_sizes=dims.context_vocab_sizes,
            dim=cfg.context_dim,
            zero_level_padding=cfg.context_padding,
        )

    # -- execution ---------------------------------------------------------------------------
    def check_execution(self, execution: Execution) -> None:
        """Raise ValueError for a path this model does not have; this base has the plain
        path alone (``forward_groups`` repeats each history)."""
        if execution != PLAIN:
            raise ValueError(f"{type(self).__name__} has the plain path alone, not {execution}")

    def set_execution(self, execution: Execution) -> None:
        self.check_execution(execution)
        self.execution = execution

    @contextlib.contextmanager
    def executing(self, execution: Execution) -> Iterator[None]:
        """Compute with ``execution`` inside the block, then go back to the model's own."""
        saved = self.execution
        self.set_execution(execution)
        try:
            yield
        finally:
            self.execution = saved

    def full_window(self) -> contextlib.AbstractContextManager[None]:
        """No trimming, no packing: every row at the model's whole window, the fixed layout
        that exports and attention maps describe."""
        return self.executing(self.execution.replace(trim_padding=False, pack_tokens=False))

    # -- what callers may ask of any model -----------------------------------------------------
    @property
    def reads_history(self) -> bool:
        """Whether the model's output (and cost) depends on the history."""
        return True

    @property
    def mask(self) -> MaskMode:
        """How padding is masked: "correct" (padding inert) for every kind but a Transformer
        built to reproduce the release's inverted mask ("released")."""
        return "correct"

    @property
    def padding_inert(self) -> bool:
        """Whether padding positions leave the scores unchanged (so histories may be
        left-padded freely)."""
        return self.mask == "correct"

    def macs(self, history_len: int) -> dict[str, int]:
        """Forward multiply-adds of one sample by part (no ``total``), at ``history_len``
        computed history positions (model/cost.py sums them)."""
        raise NotImplementedError(f"{type(self).__name__} has no cost model")

    def window(self, history: torch.Tensor) -> torch.Tensor:
        """The history positions the model reads: here the last ``max_len``.

        Shape: (B, L) ids, left-padded with 0 -> (B, L'). Subclasses may also drop columns that
        are padding in every row, or pad up to a minimum width, where that is exact.
        """
        return history[:, -self.cfg.max_len :]

    def forward(
        self, history: torch.Tensor, target: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError

    def forward_groups(
        self,
        history: torch.Tensor,
        group: torch.Tensor,
        target: torch.Tensor,
        context: torch.Tensor,
    ) -> torch.Tensor:
        """Many targets per history: row b is (history[group[b]], target[b], context[group[b]]).

        Equal to ``forward`` on the repeated rows; a model whose execution shares histories
        may do each history's work once among its rows. Shape: history (G, L), group (B,)
        indices into G, target (B,), context (G, F) -> (B,) logits.
        """
        return self.forward(history[group], target, context[group])
