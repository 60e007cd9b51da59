"""What every CTR model shares with the code around it: its data sizes and its interface."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmctr.config.model import ModelConfig
from mmctr.model.item import ContextEncoder, ItemEncoder


@dataclass(frozen=True)
class DataDims:
    """The sizes a model takes from its data; plain ints so that model code needs no data code."""

    num_items: int
    num_tags: int
    tags_per_item: int
    emb_dim: int
    context_vocab_sizes: tuple[int, ...]


class CTRModel(nn.Module):
    """The interface that training, evaluation, prediction and checkpoints rely on.

    A model keeps its config in ``cfg``, owns an ``ItemEncoder`` as ``items`` (the loop loads
    the data's item table into it) and maps int ids to click logits; the loss lives in
    training. It takes each row's whole stored history and owns the choice of which positions
    it reads (``window``): nothing outside the model cuts histories.

    Shape: history (B, L), target (B,), context (B, F) int ids -> (B,) logits.
    """

    cfg: ModelConfig
    items: ItemEncoder
    context: ContextEncoder

    def _init_inputs(self, cfg: ModelConfig, dims: DataDims) -> None:
        """The item and context encoders every model shares; call once from ``__init__``."""
        self.cfg = cfg
        self.items = ItemEncoder(
            cfg,
            num_items=dims.num_items,
            num_tags=dims.num_tags,
            tags_per_item=dims.tags_per_item,
            emb_dim=dims.emb_dim,
        )
        self.context = ContextEncoder(
            vocab_sizes=dims.context_vocab_sizes,
            dim=cfg.context_dim,
            zero_level_padding=cfg.context_padding,
        )

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

        Equal to ``forward`` on the repeated rows; a model may share each history's work among
        its rows. Shape: history (G, L), group (B,) indices into G, target (B,), context (G, F)
        -> (B,) logits.
        """
        return self.forward(history[group], target, context[group])
