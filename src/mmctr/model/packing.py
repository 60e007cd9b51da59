"""Where each real history item goes when the Transformer runs on real items only.

The packed path keeps the N real items of a batch as one (N, D) matrix for every per-token
layer. Attention needs rows, so the rows are bucketed by history length (widths 1, 2, 3, 4, 6,
8, 12, 16, 24, ...): a bucket's rows are laid out side by side at the bucket's longest length,
padding masked out. With MicroLens-like lengths (median 6 of 100) this computes attention on a
few times the real tokens instead of on B x max_len, and buckets whose rows all have the same
length need neither padding nor a mask. Everything here is index arithmetic, done once a batch
and shared by all layers; none of it needs gradients.

Packed order: tokens sorted by bucket, then by position in the batch (row-major), so that each
bucket's tokens are one contiguous slice of the (N, D) matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def bucket_widths(max_len: int) -> list[int]:
    """1, 2, 3, 4, 6, 8, 12, ... (powers of two and 1.5 times them) up to and including max_len:
    a row of length n pads to at most 1.5 n, so attention costs at most 2.25x its real work."""
    widths: set[int] = {max_len}
    p = 1
    while p < max_len:
        widths.update(w for w in (p, p + p // 2) if w < max_len)
        p *= 2
    return sorted(widths)


@dataclass(frozen=True)
class Bucket:
    """Rows of one length bucket: packed tokens [start, end) in a (rows, width) layout."""

    start: int
    end: int
    rows: int
    width: int
    slots: torch.Tensor | None  # (end - start,) slot of each token in rows * width; None: dense
    attend: torch.Tensor | None  # (rows, 1, 1, width) True where a key is real; None: all real


@dataclass(frozen=True)
class PackedLayout:
    """The layout of one batch; see the module docstring."""

    order: torch.Tensor  # (N,) row-major index (among real items) of each packed token
    row: torch.Tensor  # (N,) batch row of each packed token
    buckets: tuple[Bucket, ...]
    batch: int
    tail: torch.Tensor  # packed tokens in the last ``first_k`` columns of the (B, L) layout
    tail_slots: torch.Tensor  # their slots in a (B, first_k) layout


@torch.no_grad()
def plan_layout(real: torch.Tensor, first_k: int) -> PackedLayout:
    """The layout of a (B, L) bool mask of real items; L >= first_k."""
    B, L = real.shape
    device = real.device
    flat = real.reshape(-1).nonzero().squeeze(1)  # (N,) row-major positions of real items
    tok_row = torch.div(flat, L, rounding_mode="floor")
    tok_col = flat - tok_row * L
    rank = (real.cumsum(1) - 1).reshape(-1)[flat]  # index of each item among its row's items
    lengths = real.sum(1)  # (B,)

    widths = torch.tensor(bucket_widths(L), device=device)
    bucket = torch.searchsorted(widths, lengths) + 1  # 1.. for real rows; 0 for empty ones
    bucket[lengths == 0] = 0
    n_buckets = len(widths) + 1
    by_bucket = torch.argsort(bucket, stable=True)
    rows_per = torch.bincount(bucket, minlength=n_buckets)
    first_row = torch.cumsum(rows_per, 0) - rows_per
    local = torch.empty_like(bucket)
    local[by_bucket] = torch.arange(B, device=device) - first_row[bucket[by_bucket]]
    width = torch.zeros(n_buckets, dtype=lengths.dtype, device=device)
    width = width.scatter_reduce(0, bucket, lengths, "amax")

    row_width = width[bucket]
    slot = local * row_width + (row_width - lengths)  # where each row's first real item goes
    tok_bucket = bucket[tok_row]
    order = torch.argsort(tok_bucket, stable=True)
    tok_slot = (slot[tok_row] + rank)[order]
    tokens_per = torch.bincount(tok_bucket, minlength=n_buckets)

    # one transfer of the small per-bucket figures, then plain Python
    rows_l, tokens_l, width_l = torch.stack([rows_per, tokens_per, width]).tolist()
    buckets: list[Bucket] = []
    start = 0
    for b in range(1, n_buckets):
        n, rows, w = tokens_l[b], rows_l[b], width_l[b]
        if n == 0:
            continue
        end = start + n
        if n == rows * w:  # every row is w long: the slice is already the (rows, w) layout
            buckets.append(Bucket(start, end, rows, w, None, None))
        else:
            slots = tok_slot[start:end]
            attend = torch.zeros(rows * w, dtype=torch.bool, device=device)
            attend[slots] = True
            buckets.append(Bucket(start, end, rows, w, slots, attend.view(rows, 1, 1, w)))
        start = end

    packed_col = tok_col[order]
    packed_row = tok_row[order]
    tail = (packed_col >= L - first_k).nonzero().squeeze(1)
    tail_slots = packed_row[tail] * first_k + packed_col[tail] - (L - first_k)
    return PackedLayout(order, packed_row, tuple(buckets), B, tail, tail_slots)
