"""The sequence module: a Transformer over history items, each concatenated with the target.

TransAct-style (Xia et al., KDD 2023), as in the seed solution: no positional encoding, no
causal mask, post-LayerNorm. The user interest is the flattened output at the last ``first_k``
positions plus a Linear of the max-pool over real positions.
"""

from __future__ import annotations

import math
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

from mmctr.config.model import MaskMode, ModelConfig
from mmctr.model.packing import PackedLayout, plan_layout


class EncoderLayer(nn.Module):
    """Post-LN Transformer encoder layer: x = LN(x + Attn(x)); x = LN(x + FF(x)).

    Shape: x (B, L, D), attend (B, 1, 1, L) bool, True where a key may be attended -> (B, L, D).
    """

    def __init__(self, *, d_model: int, num_heads: int, ff_dim: int, dropout: float) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model {d_model} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.attn_out = nn.Linear(d_model, d_model)
        self.ff_in = nn.Linear(d_model, ff_dim)
        self.ff_out = nn.Linear(ff_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def reset_attention(self) -> None:
        """Initialise the attention as ``nn.MultiheadAttention`` does, which the release used.

        In-projection Xavier-uniform, out-projection PyTorch's default Linear init (Kaiming-
        uniform, a = sqrt(5): std 1/sqrt(3 d_model)), both biases zero. FuxiCTR's Xavier-normal
        pass skips these two (their types are not exactly ``nn.Linear``), so in the release they
        keep this init; Xavier-normal would start the out-projection sqrt(3) times larger.
        """
        nn.init.xavier_uniform_(self.qkv.weight)
        nn.init.zeros_(self.qkv.bias)
        nn.init.kaiming_uniform_(self.attn_out.weight, a=math.sqrt(5))
        nn.init.zeros_(self.attn_out.bias)

    def forward(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        a = self._attention(self.qkv(x), attend)  # (B, L, D)
        return self._residual_blocks(x, a)

    def forward_packed(self, x: torch.Tensor, layout: PackedLayout) -> torch.Tensor:
        """The same layer over real tokens only: x (N, D) in ``layout``'s packed order.

        Every per-token step (projections, feed-forward, LayerNorm) runs on the N real tokens;
        the attention runs bucket by bucket, each bucket padded to its own longest row.
        """
        qkv = self.qkv(x)  # (N, 3D)
        parts = []
        # one split, not a slice per bucket: each slice's backward would write a full (N, 3D)
        segments = qkv.split([b.end - b.start for b in layout.buckets])
        for b, seg in zip(layout.buckets, segments, strict=True):
            if b.slots is None:  # dense: every row of the bucket is b.width long
                a = self._attention(seg.view(b.rows, b.width, -1), None)
                parts.append(a.reshape(b.end - b.start, -1))
            else:
                padded = seg.new_zeros(b.rows * b.width, seg.shape[1])
                padded.index_copy_(0, b.slots, seg)
                a = self._attention(padded.view(b.rows, b.width, -1), b.attend)
                parts.append(a.reshape(b.rows * b.width, -1).index_select(0, b.slots))
        a = torch.cat(parts) if len(parts) > 1 else parts[0]
        return self._residual_blocks(x, a)

    def _attention(self, qkv: torch.Tensor, attend: torch.Tensor | None) -> torch.Tensor:
        B, L, three_d = qkv.shape
        D = three_d // 3
        p = self.dropout if self.training else 0.0
        q, k, v = qkv.view(B, L, 3, self.num_heads, D // self.num_heads).unbind(2)
        a = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=attend, dropout_p=p
        )  # (B, H, L, D/H)
        return a.transpose(1, 2).reshape(B, L, D)

    def attention_probs(self, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """softmax(Q K^T / sqrt(d)) as ``forward`` computes it inside its fused attention.

        Shape: x (B, L, D), attend (B, 1, 1, L) -> (B, H, L queries, L keys); each query row sums
        to 1 over the keys it may attend to and is 0 elsewhere.
        """
        B, L, D = x.shape
        q, k, _ = self.qkv(x).view(B, L, 3, self.num_heads, D // self.num_heads).unbind(2)
        scores = q.transpose(1, 2) @ k.permute(0, 2, 3, 1) / math.sqrt(D // self.num_heads)
        return scores.masked_fill(~attend, float("-inf")).softmax(-1)

    def _residual_blocks(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        p = self.dropout if self.training else 0.0
        x = self.norm1(x + F.dropout(self.attn_out(a), p, self.training))
        h = F.dropout(F.relu(self.ff_in(x)), p, self.training)
        return self.norm2(x + F.dropout(self.ff_out(h), p, self.training))


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

    def __init__(self, cfg: ModelConfig, *, item_dim: int) -> None:
        super().__init__()
        self.target_concat = cfg.target_concat
        self.first_k = cfg.first_k
        self.mask: MaskMode = cfg.mask
        d_model = 2 * item_dim if cfg.target_concat else item_dim
        self.layers = nn.ModuleList(
            EncoderLayer(
                d_model=d_model,
                num_heads=cfg.num_heads,
                ff_dim=cfg.ff_dim,
                dropout=cfg.seq_dropout,
            )
            for _ in range(cfg.num_layers)
        )
        self.pool: nn.Linear | None = nn.Linear(d_model, d_model) if cfg.max_pool else None
        self.d_model = d_model
        self.out_dim = d_model * (cfg.first_k + int(cfg.max_pool))

    def forward(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        B, L, _ = history.shape
        if L < self.first_k:  # the model's window pads ids up to first_k positions
            raise ValueError(f"history length {L} is shorter than first_k {self.first_k}")
        x = history
        if self.target_concat:
            x = torch.cat([history, target.unsqueeze(1).expand(B, L, -1)], dim=-1)  # (B, L, D)
        attend, keep = key_masks(real, self.mask)
        for layer in self.layers:
            x = layer(x, attend[:, None, None, :])
        return self._interest(x * keep.unsqueeze(-1).to(x.dtype), keep)

    def forward_packed(
        self, history: torch.Tensor, target: torch.Tensor, real: torch.Tensor
    ) -> torch.Tensor:
        """As ``forward`` under the correct mask, computing per-token layers on real items only.

        Shape: history (N, Di) vectors of the real items, in row-major order of ``real``;
        target (B, Di); real (B, L) bool with L >= first_k -> (B, out_dim).
        """
        if self.mask != "correct":
            raise ValueError("packed tokens are only exact under mask='correct'")
        L = real.shape[1]
        if L < self.first_k:
            raise ValueError(f"history length {L} is shorter than first_k {self.first_k}")
        layout = plan_layout(real, self.first_k)
        x = history.index_select(0, layout.order)  # (N, Di) in packed order
        if self.target_concat:
            x = torch.cat([x, target.index_select(0, layout.row)], dim=-1)
        if layout.buckets:  # else no row has any history and x is empty
            for layer in self.layers:
                x = cast(EncoderLayer, layer).forward_packed(x, layout)
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
