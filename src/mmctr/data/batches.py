"""Cut a split into batches of torch tensors: slices and gathers of contiguous arrays only."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from mmctr.data.reader import Split


@dataclass(frozen=True)
class Batch:
    history: torch.Tensor  # (B, L) int64 item ids, left-padded with 0
    target: torch.Tensor  # (B,) int64 item ids
    context: torch.Tensor  # (B, F) int64
    labels: torch.Tensor | None  # (B,) float32

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        labels = None if self.labels is None else move(self.labels)
        return Batch(move(self.history), move(self.target), move(self.context), labels)


def make_batch(split: Split, rows: slice | np.ndarray) -> Batch:
    """Rows of ``split`` as a Batch with their whole stored history.

    The model decides which positions it reads (``CTRModel.window``); data never cuts them.
    """
    history = split.history[rows]
    labels = None if split.labels is None else torch.from_numpy(split.labels[rows])
    return Batch(
        history=torch.from_numpy(np.ascontiguousarray(history)).long(),
        target=torch.from_numpy(split.target[rows]).long(),
        context=torch.from_numpy(split.context[rows]).long(),
        labels=labels,
    )


def iter_batches(
    split: Split,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    drop_last: bool = False,
) -> Iterator[Batch]:
    """Batches in file order, or in a permutation fixed by ``seed`` when ``shuffle``."""
    if shuffle:
        for rows in order_batches(len(split), batch_size, seed=seed, drop_last=drop_last):
            yield make_batch(split, rows)
        return
    n = len(split)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield make_batch(split, slice(start, min(start + batch_size, n)))


def order_batches(
    n: int, batch_size: int, *, seed: int, drop_last: bool = False
) -> Iterator[np.ndarray]:
    """The row indices of each batch of a permutation of n rows fixed by ``seed`` (the same
    on every process that asks, which is what lets data-parallel ranks share batches)."""
    order = np.random.default_rng(seed).permutation(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield order[start : min(start + batch_size, n)]


def num_batches(split: Split, batch_size: int, *, drop_last: bool = False) -> int:
    n = len(split)
    return n // batch_size if drop_last else -(-n // batch_size)
