"""DIN, the challenge's official baseline (Zhou et al., KDD 2018), on the inputs every
kind shares.

item vectors -> attention unit MLP([h, t, h - t, h * t]) -> one weight per history item
interest = sum_i w_i h_i;  [context, target, interest] -> MLP with batch norm -> logit

As in the DIN paper and the baseline the weights are not softmax-normalised (``softmax``
turns that on), so the pooled interest keeps a sense of how much of the history matches. The
attention unit uses ReLU like the baseline's config rather than the paper's Dice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmctr.config.checks import check_fields
from mmctr.config.dims import DataDims
from mmctr.config.model import ModelConfig
from mmctr.model.factory import register_model
from mmctr.model.layers import MLP, linear_macs, reset_parameters
from mmctr.model.pooling import FAST, PooledInterestCTR, one_row_safe


@dataclass(frozen=True)
class DINConfig:
    """``[model.din]``: the attention unit and the MLP on the pooled interest."""

    attention_mlp: tuple[int, ...] = (512, 256)  # attention unit MLP on [h, t, h - t, h * t]
    attention_dropout: float = 0.1
    softmax: bool = False  # False as in the DIN paper and the baseline: raw weights
    mlp: tuple[int, ...] = (1024, 512, 256)  # Linear -> BatchNorm -> ReLU -> Dropout blocks
    dropout: float = 0.1
    batch_norm: bool = True

    def __post_init__(self) -> None:
        check_fields(
            self,
            "model.din",
            at_least_one=("attention_mlp", "mlp"),
            probabilities=("attention_dropout", "dropout"),
        )
        if not self.attention_mlp:
            raise ValueError("model.din.attention_mlp needs at least one hidden size")


class TargetAttention(nn.Module):
    """DIN's local activation unit: a weight for each history item given the target.

    ``w_i = MLP([h_i, t, h_i - t, h_i * t])`` for a real item and 0 for padding (with
    ``softmax``, ``w = softmax`` over the real items); ``interest = sum_i w_i h_i``.

    Shape: history (B, L, D), target (B, D), real (B, L) bool -> (B, D).
    """

    def __init__(self, *, dim: int, hidden: tuple[int, ...], dropout: float, softmax: bool) -> None:
        super().__init__()
        self.mlp = MLP(in_dim=4 * dim, hidden=hidden, dropout=dropout)
        self.score = nn.Linear(self.mlp.out_dim, 1)
        self.softmax = softmax

    def _scores(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        units = torch.cat([history, target, history - target, history * target], dim=-1)
        return self.score(self.mlp(units)).squeeze(-1)  # (...,)

    def _normalise(self, scores: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        if not self.softmax:
            return scores.masked_fill(~real, 0.0)
        weights = scores.masked_fill(~real, float("-inf")).softmax(-1)
        return weights.nan_to_num(0.0)  # a row without history gets no weight, not NaN

    def weights(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """The weight of every history position, zero on padding. Shape: -> (B, L)."""
        scores = self._scores(history, target.unsqueeze(1).expand_as(history))  # (B, L)
        return self._normalise(scores, real)

    def forward(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        w = self.weights(history, target, real)
        return (w.unsqueeze(-1) * history).sum(1)  # (B, D)

    def forward_packed(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """As ``forward``, scoring real items only.

        Shape: history (N, D) vectors of the real items in row-major order of ``real``;
        target (B, D); real (B, L) bool -> (B, D).
        """
        rows = real.nonzero()[:, 0]  # (N,) the batch row of each real item
        scores = real.new_zeros(real.shape, dtype=history.dtype)
        scores = scores.masked_scatter(real, self._scores(history, target[rows]))  # (B, L)
        w = self._normalise(scores, real)[real]  # (N,)
        pooled = history.new_zeros(target.shape)
        return pooled.index_add(0, rows, w.unsqueeze(-1) * history)  # (B, D)


@register_model("din", DINConfig)
class DIN(PooledInterestCTR):
    """Returns click logits; shares ``ItemEncoder`` and ``ContextEncoder`` with the other kinds.

    Reads the shared [model] keys (items, context, ``max_len``) and its own [model.din].

    Shape: history (B, L), target (B,), context (B, F) int ids -> (B,) logits.
    """

    attention: TargetAttention

    def __init__(self, cfg: ModelConfig, dims: DataDims) -> None:
        super().__init__()
        self._init_inputs(cfg, dims)
        p = cfg.section(DINConfig)
        self.attention = TargetAttention(
            dim=self.items.out_dim,
            hidden=p.attention_mlp,
            dropout=p.attention_dropout,
            softmax=p.softmax,
        )
        in_dim = self.context.out_dim + 2 * self.items.out_dim
        head: list[nn.Module] = []
        if p.mlp:
            mlp = MLP(in_dim=in_dim, hidden=p.mlp, dropout=p.dropout, batch_norm=p.batch_norm)
            head.append(mlp)
            in_dim = mlp.out_dim
        head.append(nn.Linear(in_dim, 1))
        self.head = nn.Sequential(*head)
        reset_parameters(self)
        self.set_execution(FAST)

    def top(self, x: torch.Tensor) -> torch.Tensor:
        return one_row_safe(self.head, x).squeeze(-1)

    def macs(self, history_len: int) -> dict[str, int]:
        return {
            "attention": history_len * linear_macs(self.attention),
            "head": linear_macs(self.head),
        }
