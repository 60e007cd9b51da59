"""Generic building blocks: an MLP and the DCNv2 cross network."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """Stack of Linear -> (BatchNorm) -> ReLU -> Dropout, one block per entry of ``hidden``.

    Shape: (..., in_dim) -> (..., hidden[-1]); with batch norm, (B, in_dim) -> (B, hidden[-1]).
    """

    def __init__(
        self,
        *,
        in_dim: int,
        hidden: tuple[int, ...],
        dropout: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("MLP needs at least one hidden size")
        blocks: list[nn.Module] = []
        for width in hidden:
            blocks.append(nn.Linear(in_dim, width))
            if batch_norm:
                blocks.append(nn.BatchNorm1d(width))
            blocks.append(nn.ReLU())
            if dropout > 0:
                blocks.append(nn.Dropout(dropout))
            in_dim = width
        self.net = nn.Sequential(*blocks)
        self.out_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossNetwork(nn.Module):
    """DCNv2 cross network with full-rank layers (Wang et al., WWW 2021).

    ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``, with ``*`` element-wise; each layer adds one
    degree of explicit feature interaction while the residual keeps the lower degrees.

    Shape: (B, dim) -> (B, dim).
    """

    def __init__(self, *, dim: int, num_layers: int) -> None:
        super().__init__()
        if dim < 1 or num_layers < 1:
            raise ValueError(
                f"CrossNetwork needs dim >= 1 and num_layers >= 1, got {dim}, {num_layers}"
            )
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
        self.out_dim = dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x
