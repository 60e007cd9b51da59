"""One post-LayerNorm Transformer encoder layer, with a path over packed real tokens."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mmctr.model.packing import PackedLayout


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

    def forward(
        self, x: torch.Tensor, attend: torch.Tensor, qkv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``qkv``, when given, is ``self.qkv(x)`` computed by the caller (shared histories)."""
        a = self._attention(self.qkv(x) if qkv is None else qkv, attend)  # (B, L, D)
        return self._residual_blocks(x, a)

    def forward_packed(
        self, x: torch.Tensor, layout: PackedLayout, qkv: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The same layer over real tokens only: x (N, D) in ``layout``'s packed order.

        Every per-token step (projections, feed-forward, LayerNorm) runs on the N real tokens;
        the attention runs bucket by bucket, each bucket padded to its own longest row.
        """
        if qkv is None:
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
