"""Generic building blocks: an MLP and the DCNv2 cross network; the release's init and the
multiply-adds of Linear layers, which every model kind shares."""

from __future__ import annotations

import torch
from torch import nn

from mmctr.model.encoder import EncoderLayer
from mmctr.model.item import EMBEDDING_INIT_STD


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
    """DCNv2 cross network (Wang et al., WWW 2021), full-rank unless ``rank`` is given.

    ``x_{l+1} = x_0 * (W_l x_l + b_l) + x_l``, with ``*`` element-wise; each layer adds one
    degree of explicit feature interaction while the residual keeps the lower degrees. With
    ``rank = r > 0`` each ``W_l`` is the product ``U_l V_l`` of a (dim, r) and an (r, dim)
    matrix, DCNv2's low-rank form: 2 r dim weights a layer instead of dim^2.

    Shape: (B, dim) -> (B, dim).
    """

    def __init__(self, *, dim: int, num_layers: int, rank: int = 0) -> None:
        super().__init__()
        if dim < 1 or num_layers < 1 or rank < 0:
            raise ValueError(
                "CrossNetwork needs dim >= 1, num_layers >= 1 and rank >= 0, "
                f"got {dim}, {num_layers}, {rank}"
            )
        self.layers = nn.ModuleList(
            nn.Linear(dim, dim)
            if rank == 0
            else nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
            for _ in range(num_layers)
        )
        self.out_dim = dim

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


def reset_parameters(model: nn.Module) -> None:
    """The release's init: embeddings N(0, 1e-4) with a zero padding row; Linear Xavier-normal,
    zero bias; the attention's projections as ``nn.MultiheadAttention`` initialises them."""
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=EMBEDDING_INIT_STD)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, EncoderLayer):
            module.reset_attention()


def linear_macs(module: nn.Module | None) -> int:
    """Multiply-adds of one pass through every Linear layer of ``module`` (0 for None)."""
    if module is None:
        return 0
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))
