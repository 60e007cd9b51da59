"""Helpers shared by the model tests: loud random weights and left-padded batches."""

from __future__ import annotations

from typing import Any, TypeVar

import torch

from mmctr.config import Config
from mmctr.model import DataDims, ModelConfig, fit_items
from mmctr.model.base import CTRModel

M = TypeVar("M", bound=CTRModel)


def model_config(**flat: Any) -> ModelConfig:
    """A ModelConfig from the flat keys of mmctr 0.1 ([model] before its sections), moved to
    their sections as an old run's saved config is."""
    return Config.from_saved({"model": flat}, source="test").model


def with_loud_weights(model: M, dims: DataDims) -> M:
    """Random item features and weights well above the release's tiny init, so that any leak
    through a mask shows in the output; padding rows stay zero. Returns the model in eval mode."""
    g = torch.Generator().manual_seed(1)
    tags = torch.randint(0, dims.num_tags, (dims.num_items, dims.tags_per_item), generator=g)
    emb = torch.randn(dims.num_items, dims.emb_dim, generator=g)
    tags[0], emb[0] = 0, 0.0
    model.items.load_item_features(tags, emb)
    fit_items(model.items, seed=0)  # the item-side switches, where the config has any
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
        model.items.id_emb.weight[0] = 0.0
        model.items.tag_emb.weight[0] = 0.0
    return model.eval()


def left_padded_batch(
    lengths: list[int], dims: DataDims, seq_len: int = 20
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(history (B, seq_len), target (B,), context (B, 2)) with row i holding lengths[i] items."""
    g = torch.Generator().manual_seed(2)
    history = torch.zeros(len(lengths), seq_len, dtype=torch.long)
    for row, n in enumerate(lengths):
        history[row, seq_len - n :] = torch.randint(1, dims.num_items, (n,), generator=g)
    target = torch.randint(1, dims.num_items, (len(lengths),), generator=g)
    context = torch.randint(0, 11, (len(lengths), 2), generator=g)
    return history, target, context
