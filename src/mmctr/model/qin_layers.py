"""The two blocks of QIN (the 2nd place of the WWW 2025 EReL@MIR challenge): a target
attention whose scores pass through ReLU instead of a softmax, and the quadratic neural
network, a residual stack of element-wise products of the input with linear maps of itself."""

from __future__ import annotations

import math

import torch
from torch import nn


class ReLUTargetAttention(nn.Module):
    """The target item's interest in the history: unnormalised, ReLU-gated dot products.

    ``q = W_q t``, ``k_i = W_k h_i``, ``v_i = W_v h_i`` (bias-free, width ``attention_dim``);
    ``w_i = ReLU(q . k_i / sqrt(attention_dim))`` for a real item and 0 for padding;
    ``out = W_o (sum_i w_i v_i) + t``. Weights do not sum to one: the pooled vector keeps how
    much of the history matches. A row without history gets ``out = t`` (the residual alone).

    Args:
        dim: width of the item vectors (target and history).
        attention_dim: width of the query, key and value projections.

    Shape: history (B, L, dim), target (B, dim), real (B, L) bool -> (B, dim).
    """

    def __init__(self, *, dim: int, attention_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(dim, attention_dim, bias=False)
        self.key = nn.Linear(dim, attention_dim, bias=False)
        self.value = nn.Linear(dim, attention_dim, bias=False)
        self.output = nn.Linear(attention_dim, dim, bias=False)
        self.scale = math.sqrt(attention_dim)

    def weights(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """The weight of every history position, zero on padding. Shape: -> (B, L)."""
        q = self.query(target).unsqueeze(-1)  # (B, A, 1)
        scores = (self.key(history) @ q).squeeze(-1) / self.scale  # (B, L)
        return scores.relu().masked_fill(~real, 0.0)

    def forward(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        w = self.weights(history, target, real).unsqueeze(1)  # (B, 1, L)
        pooled = (w @ self.value(history)).squeeze(1)  # (B, A)
        return self.output(pooled) + target

    def forward_packed(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """As ``forward``, projecting and scoring the real items only.

        Shape: history (N, dim) vectors of the real items in row-major order of ``real``;
        target (B, dim); real (B, L) bool -> (B, dim).
        """
        rows = real.nonzero()[:, 0]  # (N,) the batch row of each real item
        q = self.query(target)[rows]  # (N, A)
        w = ((q * self.key(history)).sum(-1) / self.scale).relu()  # (N,)
        pooled = q.new_zeros(target.shape[0], q.shape[1])  # (B, A)
        pooled = pooled.index_add(0, rows, w.unsqueeze(-1) * self.value(history))
        return self.output(pooled) + target


class QuadraticLayer(nn.Module):
    """One quadratic interaction of every input with every input: ``x * sum_r (W_r x + b_r)``.

    A single Linear(dim -> num_rows * dim) gives ``num_rows`` rows ``W_r x + b_r`` of width
    ``dim`` (row r is output columns r * dim .. (r + 1) * dim - 1); dropout acts on each row
    entry separately, then the rows are summed and multiplied element-wise by ``x``:
    ``y_d = x_d * sum_r (W_r x + b_r)_d``, a degree-2 polynomial of ``x``. Without dropout the
    rows act as their sum, one (dim, dim) matrix; they differ in training (independent dropout
    masks, and each row takes the whole gradient of the sum).

    Shape: (B, dim) -> (B, dim).
    """

    def __init__(self, *, dim: int, num_rows: int, dropout: float) -> None:
        super().__init__()
        self.rows = nn.Linear(dim, num_rows * dim)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.num_rows, self.dim = num_rows, dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = self.dropout(self.rows(x)).view(-1, self.num_rows, self.dim)  # (B, R, D)
        return x * rows.sum(1)


class QuadraticNetwork(nn.Module):
    """``num_layers`` residual blocks ``x <- x + Dropout(PReLU(BatchNorm(Quadratic(x))))``.

    Layer l multiplies in one more copy of its input, so the stack reaches interactions of
    degree up to 2^l while the residual keeps the lower degrees. Each block has a PReLU of its
    own (one learned slope) and, with ``batch_norm``, a BatchNorm1d; the dropout of rate
    ``dropout`` acts twice a block: inside the quadratic layer and after the PReLU.

    Shape: (B, dim) -> (B, dim).
    """

    def __init__(
        self, *, dim: int, num_layers: int, num_rows: int, dropout: float, batch_norm: bool
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            nn.Sequential(
                QuadraticLayer(dim=dim, num_rows=num_rows, dropout=dropout),
                nn.BatchNorm1d(dim) if batch_norm else nn.Identity(),
                nn.PReLU(),
                nn.Dropout(dropout) if dropout > 0 else nn.Identity(),
            )
            for _ in range(num_layers)
        )
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x
