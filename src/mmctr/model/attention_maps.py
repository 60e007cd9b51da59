"""Attention maps of a trained model, captured without changing what it computes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from mmctr.model.din import DIN
from mmctr.model.encoder import EncoderLayer
from mmctr.model.target_transformer import TargetTransformerCTR


class AttentionRecorder:
    """Per encoder layer, the attention probabilities of every forward pass while recording."""

    def __init__(self, num_layers: int) -> None:
        self.layers: list[list[torch.Tensor]] = [[] for _ in range(num_layers)]

    def record(self, index: int, module: nn.Module, args: tuple[Any, ...]) -> None:
        assert isinstance(module, EncoderLayer)
        with torch.no_grad():
            self.layers[index].append(module.attention_probs(*args).detach())

    def stacked(self) -> torch.Tensor:
        """Shape: -> (B, layers, H, L, L), the batches of all passes concatenated."""
        return torch.stack([torch.cat(passes) for passes in self.layers], dim=1)


@contextlib.contextmanager
def capture_attention(model: TargetTransformerCTR) -> Iterator[AttentionRecorder]:
    """Record each encoder layer's softmax(QK^T / sqrt(d)) while the block runs.

    Forward pre-hooks recompute the probabilities from each layer's input with the layer's own
    mask, so the model's outputs are untouched. Inside the block every row runs at the full
    window (``model.full_window``: ``max_len`` positions, at least ``first_k``), so that each
    layer sees the padded (B, L) layout the maps describe.
    """
    if model.sequence is None:
        raise ValueError("the model has no sequence module (use_sequence = false)")
    recorder = AttentionRecorder(len(model.sequence.layers))
    handles = [
        layer.register_forward_pre_hook(lambda module, args, i=i: recorder.record(i, module, args))
        for i, layer in enumerate(model.sequence.layers)
    ]
    try:
        with model.full_window():
            yield recorder
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def din_weights(model: DIN, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DIN's attention-unit weight of every position of its window, 0 on padding.

    Shape: history (B, L) ids, target (B,) ids -> (B, min(L, max_len)).
    """
    with model.full_window():
        window = model.window(history)
    return model.attention.weights(model.items(window), model.items(target), window.ne(0))
