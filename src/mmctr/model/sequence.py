"""The sequence module: a Transformer over history items, each concatenated with the target.

TransAct-style (Xia et al., KDD 2023), as in the 1st-place solution: no positional encoding, no
causal mask, post-LayerNorm. Two switches go beyond it (docs/beyond.md): ``similarity_input``
adds s w to each token, s the cosine similarity of the frozen embeddings of the history item
and the target and w a learned vector; ``positions`` adds a learned embedding of the token's
position counted from the newest item. The user interest is the flattened output at the
last ``first_k`` positions plus a Linear of the max-pool over real positions.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from mmctr.config.model import MaskMode
from mmctr.model.encoder import EncoderLayer
from mmctr.model.packing import PackedLayout, plan_layout


def trim_history(history: torch.Tensor, min_len: int) -> torch.Tensor:
    """Drop the leading columns that are padding in every row, keeping at least ``min_len``.

    Exact under the correct mask: padding neither attends nor is attended, and it is zeroed
    before the last-k flatten and the max-pool. Shape: (B, L) -> (B, L'), L' <= L.
    """
    L = history.shape[1]
    real_cols = torch.nonzero(history.ne(0).any(0))
    first = int(real_cols[0]) if real_cols.numel() else L
    return history[:, min(first, max(L - min_len, 0)) :]


def key_masks(real: torch.Tensor, mode: MaskMode) -> tuple[torch.Tensor, torch.Tensor]:
    """(attend, keep): keys each query may attend to, and positions whose output is used.

    ``correct`` attends to and keeps real items. ``released`` reproduces the release, whose
    loader marked real items with 1 and passed that as a key-padding mask (True = ignore), so it
    attends to and keeps padding only. A row with nothing to attend to would turn softmax into
    NaN, so, like the release, such a row attends to its last position.
    """
    keep = real if mode == "correct" else ~real
    attend = keep.clone()
    attend[~keep.any(1), -1] = True
    if mode == "released":
        keep = attend  # the release used its adjusted mask for the output too
    return attend, keep


class TargetAwareTransformer(nn.Module):
    """History items (each ++ target) -> Transformer -> last-k flatten ++ Linear(max-pool).

    Shape: history (B, L, Di), target (B, Di), real (B, L) bool -> (B, out_dim) where
    out_dim = d_model * (first_k + max_pool) and d_model = 2 Di with target_concat, else Di.
    """

    def __init__(
        self,
        *,
        item_dim: int,
        target_concat: bool,
        num_layers: int,
        num_heads: int,
        ff_dim: int,
        dropout: float,
        first_k: int,
        max_pool: bool,
        mask: MaskMode,
        similarity_input: bool = False,
        positions: int = 0,
    ) -> None:
        """``positions``: learn an embedding for each of that many positions (0: none)."""
        super().__init__()
        self.target_concat = target_concat
        self.first_k = first_k
        self.mask: MaskMode = mask
        d_model = 2 * item_dim if target_concat else item_dim
        self.layers = nn.ModuleList(
            EncoderLayer(d_model=d_model, num_heads=num_heads, ff_dim=ff_dim, dropout=dropout)
            for _ in range(num_layers)
        )
        self.pool: nn.Linear | None = nn.Linear(d_model, d_model) if max_pool else None
        self.sim_proj = nn.Linear(1, d_model, bias=False) if similarity_input else None
        self.positions = nn.Embedding(positions, d_model) if positions else None
        self.d_model = d_model
        self.out_dim = d_model * (first_k + int(max_pool))

    @property
    def reads_ids(self) -> bool:
        """Whether tokens depend on more than the item vectors (similarity, positions)."""
        return self.sim_proj is not None or self.positions is not None

    def forward(
        self,
        history: torch.Tensor,
        target: torch.Tensor,
        real: torch.Tensor,
        sim: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``sim`` (B, L): target-history similarities, needed with ``similarity_input``."""
        B, L, _ = history.shape
        self._check_width(L)
        x = history
        if self.target_concat:
            x = torch.cat([history, target.unsqueeze(1).expand(B, L, -1)], dim=-1)  # (B, L, D)
        age = torch.arange(L - 1, -1, -1, device=x.device)  # 0: the newest position
        return self._dense(self._extras(x, sim, age), real)

    def forward_packed(
        self,
        history: torch.Tensor,
        target: torch.Tensor,
        real: torch.Tensor,
        sim: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """As ``forward`` under the correct mask, computing per-token layers on real items only.

        Shape: history (N, Di) vectors of the real items, in row-major order of ``real``;
        target (B, Di); real (B, L) bool with L >= first_k; sim (N,) in the order of
        ``history`` -> (B, out_dim).
        """
        layout = self._layout(real)
        x = history.index_select(0, layout.order)  # (N, Di) in packed order
        if self.target_concat:
            x = torch.cat([x, target.index_select(0, layout.row)], dim=-1)
        age = None
        if self.positions is not None:
            age = real.shape[1] - 1 - real.nonzero()[:, 1].index_select(0, layout.order)
        if sim is not None:
            sim = sim.index_select(0, layout.order)
        return self._packed(self._extras(x, sim, age), layout)

    def _extras(
        self, x: torch.Tensor, sim: torch.Tensor | None, age: torch.Tensor | None
    ) -> torch.Tensor:
        """x plus the similarity and position terms the switches ask for (..., D) tokens."""
        if self.sim_proj is not None:
            if sim is None:
                raise ValueError("model.similarity_input needs the target-history similarities")
            x = x + self.sim_proj(sim.unsqueeze(-1).to(x.dtype))
        if self.positions is not None and age is not None:
            x = x + self.positions(age)
        return x

    def forward_groups(
        self,
        history: torch.Tensor,
        real: torch.Tensor,
        target: torch.Tensor,
        group: torch.Tensor,
        *,
        packed: bool,
    ) -> torch.Tensor:
        """``forward`` (or ``forward_packed``) of row b = (history[group[b]], target[b]), with
        each history's share of the work done once, however many targets it is scored with.

        The first layer's projection of [item ++ target] is W_item item + W_target target + b:
        the item half is computed per history, the target half per row, and their sum replaces
        the full projection. Without target concatenation nothing depends on the target, so
        the whole Transformer runs once per history. Exact up to float rounding. (A config
        always has at least one layer.)

        Shape: history (G, L, Di), real (G, L) bool, target (B, Di), group (B,) indices into
        G -> (B, out_dim).
        """
        G, L, di = history.shape
        self._check_width(L)
        if self.reads_ids:
            raise ValueError(
                "similarity or position inputs differ by more than the target between the rows "
                "of a history: there is no shared work (score the rows with forward)"
            )
        if not self.target_concat:
            return self._run_once(history, real, packed)[group]
        real_rows = real.index_select(0, group)  # (B, L)
        first = cast(EncoderLayer, self.layers[0])
        w = first.qkv.weight
        if not isinstance(w, torch.Tensor):
            raise ValueError(
                "a quantised (int8) first layer has no weight halves to share: score the rows "
                "with forward"
            )
        from_history = F.linear(history, w[:, :di]).reshape(G * L, -1)  # (G L, 3D)
        from_target = F.linear(target, w[:, di:], first.qkv.bias)  # (B, 3D)
        if packed:
            layout = self._layout(real_rows)
            flat = real_rows.reshape(-1).nonzero().squeeze(1)  # row-major real positions
            row = torch.div(flat, L, rounding_mode="floor")
            source = (group[row] * L + flat - row * L).index_select(0, layout.order)
            tokens = history.reshape(G * L, di).index_select(0, source)
            x = torch.cat([tokens, target.index_select(0, layout.row)], dim=-1)
            qkv = from_history.index_select(0, source).add_(from_target.index_select(0, layout.row))
            return self._packed(x, layout, qkv)
        B = group.shape[0]
        rows = history.index_select(0, group)
        x = torch.cat([rows, target.unsqueeze(1).expand(B, L, -1)], dim=-1)
        qkv = from_history.view(G, L, -1).index_select(0, group).add_(from_target.unsqueeze(1))
        return self._dense(x, real_rows, qkv)

    def _run_once(self, history: torch.Tensor, real: torch.Tensor, packed: bool) -> torch.Tensor:
        """The Transformer of target-free histories: history (G, L, Di) -> (G, out_dim)."""
        if packed:
            layout = self._layout(real)
            return self._packed(history[real].index_select(0, layout.order), layout)
        return self._dense(history, real)

    def _check_width(self, L: int) -> None:
        if L < self.first_k:  # the model's window pads ids up to first_k positions
            raise ValueError(f"history length {L} is shorter than first_k {self.first_k}")

    def _layout(self, real: torch.Tensor) -> PackedLayout:
        if self.mask != "correct":
            raise ValueError("packed tokens are only exact under mask='correct'")
        self._check_width(real.shape[1])
        return plan_layout(real, self.first_k)

    def _dense(
        self, x: torch.Tensor, real: torch.Tensor, qkv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The layers and the interest over (B, L, D) tokens; ``qkv``: the first layer's."""
        attend, keep = key_masks(real, self.mask)
        for layer in self.layers:
            x = layer(x, attend[:, None, None, :], qkv=qkv)
            qkv = None
        return self._interest(x * keep.unsqueeze(-1).to(x.dtype), keep)

    def _packed(
        self, x: torch.Tensor, layout: PackedLayout, qkv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The layers and the interest over (N, D) tokens in ``layout``'s packed order."""
        if layout.buckets:  # else no row has any history and x is empty
            for layer in self.layers:
                x = cast(EncoderLayer, layer).forward_packed(x, layout, qkv=qkv)
                qkv = None
        return self._packed_interest(x, layout)

    def _packed_interest(self, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """``_interest`` straight from packed tokens, without the (B, L, D) layout."""
        B, D = layout.batch, x.shape[1]
        last_k = x.new_zeros(B * self.first_k, D)
        last_k.index_copy_(0, layout.tail_slots, x.index_select(0, layout.tail))
        parts = [last_k.view(B, self.first_k * D)]
        if self.pool is not None:
            pooled = x.new_zeros(B, D).scatter_reduce(
                0, layout.row.unsqueeze(1).expand(-1, D), x, "amax", include_self=False
            )  # rows without history stay 0
            parts.append(self.pool(pooled))
        return torch.cat(parts, dim=-1)

    def _interest(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Last-k flatten ++ Linear(max-pool over kept positions); x is zero where not kept."""
        parts = [x[:, -self.first_k :].flatten(1)]  # (B, k * D)
        if self.pool is not None:
            pooled = x.masked_fill(~keep.unsqueeze(-1), float("-inf")).amax(1)
            pooled = torch.where(keep.any(1, keepdim=True), pooled, torch.zeros_like(pooled))
            parts.append(self.pool(pooled))  # (B, D)
        return torch.cat(parts, dim=-1)
