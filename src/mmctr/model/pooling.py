"""What the kinds that pool the history against the target share (DIN, QIN): an attention
module gives one interest vector per row, and a top network scores [context, target,
interest]. Padding gets weight 0 whatever it holds, so trimming and packing are exact; there
is no shared-history path (a history's work is its item vectors alone)."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from mmctr.model.base import CTRModel, Execution
from mmctr.model.sequence import trim_history

FAST = Execution(trim_padding=True, pack_tokens=True)


class Pooling(Protocol):
    """history (B, L, D) vectors, target (B, D), real (B, L) -> (B, D) interest; packed: the
    (N, D) vectors of the real items in row-major order of ``real``."""

    def __call__(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor: ...

    def forward_packed(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor: ...


class PooledInterestCTR(CTRModel):
    """A kind sets ``self.attention`` (``forward(history (B, L, D), target (B, D), real)`` and
    ``forward_packed(history (N, D), target, real)``, both -> (B, D)) and implements ``top``.

    Shape: history (B, L), target (B,), context (B, F) int ids -> (B,) logits.
    """

    attention: Pooling

    def top(self, x: torch.Tensor) -> torch.Tensor:
        """[context, target, interest] (B, F*Dc + 2 Di) -> (B,) logits."""
        raise NotImplementedError

    def check_execution(self, execution: Execution) -> None:
        if execution.share_histories:
            raise ValueError(
                f"{type(self).__name__} has no shared-history path: its forward_groups repeats rows"
            )

    def window(self, history: torch.Tensor) -> torch.Tensor:
        """The last max_len positions, less (when trimming) the all-padding columns."""
        history = super().window(history)
        return trim_history(history, 1) if self.execution.trim_padding else history

    def forward(
        self, history: torch.Tensor, target: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        target_vec = self.items(target)  # (B, Di)
        history = self.window(history)
        real = history.ne(0)  # (B, L)
        if self.execution.pack_tokens:
            interest = self.attention.forward_packed(self.items(history[real]), target_vec, real)
        else:
            interest = self.attention(self.items(history), target_vec, real)
        x = torch.cat([self.context(context), target_vec, interest], dim=-1)  # (B, F*Dc + 2Di)
        return self.top(x)


def one_row_safe(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``, except that a training batch of one row (an epoch's last batch can be
    one) is normalised with the batch norms' running statistics: its own do not exist."""
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm1d)]
    if not (module.training and x.shape[0] == 1 and norms):
        return module(x)
    for m in norms:
        m.eval()
    try:
        return module(x)
    finally:
        for m in norms:
            m.train()
