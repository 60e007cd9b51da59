"""A train split larger than memory: parquet row groups read on the fly, shared out among the
data-parallel ranks, shuffled within a bounded buffer (``data.streaming = true``).

Shuffling differs from the in-memory path, which draws one permutation of all rows. Here
each epoch draws a permutation of the file's row groups (the same on every rank); rank r
reads every N-th group of it; rows pass through a buffer of ``data.shuffle_buffer`` rows,
shuffled, of which half stays behind to mix with the next groups. Rows of one row group
therefore tend to meet in nearby batches: write the file with row groups much smaller than
the buffer (``mmctr synth`` writes 100,000 rows a group).

Every rank takes the same number of steps: ceil(rows / train.batch_size), each rank taking
an even share of its own rows at each step, so that a step holds about ``batch_size`` rows
over all ranks, and each rank knows every step's total without asking the others.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from mmctr.config.data import DataConfig
from mmctr.data.batches import Batch, make_batch
from mmctr.data.reader import RowChecks, Split, SplitFile, convert_rows, open_split
from mmctr.errors import DataError


@dataclass(frozen=True)
class Shard:
    """Where a rank stands among ``size`` ranks (training's ``World`` is one)."""

    rank: int = 0
    size: int = 1

    def share(self, n: int) -> slice:
        """This rank's contiguous share of n items: sizes differ by at most one, rank order."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


@dataclass(frozen=True)
class StreamingSplit:
    """A split read one row group at a time; never held whole."""

    name: str
    file: SplitFile
    cfg: DataConfig
    checks: RowChecks  # with the history width fixed
    buffer_rows: int
    group_rows: tuple[int, ...]  # rows of each row group, from the file's footer

    def __len__(self) -> int:
        return self.file.num_rows

    @property
    def seq_len(self) -> int:
        assert self.checks.seq_len is not None
        return self.checks.seq_len

    def read_group(self, group: int) -> Split:
        """One row group's rows, checked as ``read_split`` checks them (row numbers in the
        messages are the file's)."""
        row0 = sum(self.group_rows[:group])
        try:
            table = self.file.pf.read_row_group(group, columns=self.file.columns)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"{self.file.where}: row group {group} cannot be read ({exc})"
            ) from None
        parts = []
        for batch in table.to_batches():
            parts.append(convert_rows(batch, self.name, self.cfg, self.file.where, row0,
                                      self.checks))  # fmt: skip
            row0 += batch.num_rows
        return concat(parts)

    def steps(self, batch_size: int) -> int:
        return math.ceil(len(self) / batch_size)

    def epoch(self, batch_size: int, seed: int, shard: Shard) -> Iterator[tuple[Batch, int, int]]:
        """Each step's (this rank's batch, its real rows, the step's rows over all ranks).

        A step where this rank has no rows yields one row to be weighted zero (every rank
        must take part in every step)."""
        groups = np.random.default_rng(seed).permutation(len(self.group_rows))
        if len(groups) < shard.size:
            raise DataError(
                f"{self.file.where} has {len(groups)} row groups, fewer than the {shard.size} "
                "processes that share them; rewrite it with smaller row groups"
            )
        sizes = self.group_rows
        rows_of = [sum(sizes[g] for g in groups[r :: shard.size]) for r in range(shard.size)]
        if min(rows_of) == 0:
            raise DataError(f"{self.file.where}: a process's row groups hold no rows")
        steps = self.steps(batch_size)
        ends = [[rows * s // steps for s in range(steps + 1)] for rows in rows_of]
        stream = _Taker(self._shuffled(groups[shard.rank :: shard.size], seed, shard.rank))
        mine = ends[shard.rank]
        for s in range(steps):
            take = mine[s + 1] - mine[s]
            total = sum(e[s + 1] - e[s] for e in ends)
            rows = stream.take(take) if take else stream.spare()
            yield make_batch(rows, slice(None)), take, total

    def _shuffled(self, groups: np.ndarray, seed: int, rank: int) -> Iterator[Split]:
        """The rows of ``groups`` in a buffer-bounded shuffle, as chunks of rows."""
        rng = np.random.default_rng([seed, rank])
        held: list[Split] = []
        count = 0
        for group in groups:
            part = self.read_group(int(group))
            held.append(part)
            count += len(part)
            if count >= self.buffer_rows:
                pool = concat(held)
                order = rng.permutation(len(pool))
                keep = self.buffer_rows // 2  # stays to mix with the next groups
                yield pool.take(order[keep:])
                held, count = [pool.take(order[:keep])], keep
        if count:
            pool = concat(held)
            yield pool.take(rng.permutation(len(pool)))


class _Taker:
    """Cuts a stream of row chunks into pieces of any size."""

    def __init__(self, chunks: Iterator[Split]) -> None:
        self._chunks = chunks
        self._head: Split | None = None
        self._last: Split | None = None

    def take(self, n: int) -> Split:
        parts = []
        while n > 0:
            if self._head is None or len(self._head) == 0:
                self._head = next(self._chunks)  # the step plan never asks for more rows
            part = self._head.take(slice(0, n))
            self._head = self._head.take(slice(n, None))
            parts.append(part)
            n -= len(part)
        self._last = parts[-1]
        return concat(parts)

    def spare(self) -> Split:
        """One row to stand in for a step without rows of this rank's own (weighted 0): the
        last row taken, or before any, the next row, left in the stream."""
        if self._last is not None:
            return self._last.take(slice(0, 1))
        if self._head is None or len(self._head) == 0:
            self._head = next(self._chunks)
        return self._head.take(slice(0, 1))


def concat(parts: Sequence[Split]) -> Split:
    """Splits of the same file, one after the other."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    labels = None
    if first.labels is not None:
        labels = np.concatenate([p.labels for p in parts if p.labels is not None])
    return replace(
        first,
        users=np.concatenate([p.users for p in parts]),
        history=np.concatenate([p.history for p in parts]),
        target=np.concatenate([p.target for p in parts]),
        context=np.concatenate([p.context for p in parts]),
        labels=labels,
    )


def open_streaming(
    data_dir: Path, split: str, cfg: DataConfig, checks: RowChecks, require_labels: bool
) -> StreamingSplit:
    """Open ``split`` for streaming; its first row group is read and checked now, to fix the
    history width and to fail before training starts on a file that is wrong from the top."""
    f = open_split(data_dir, split, cfg, require_labels)
    meta = f.pf.metadata
    groups = tuple(meta.row_group(g).num_rows for g in range(meta.num_row_groups))
    stream = StreamingSplit(split, f, cfg, checks, cfg.shuffle_buffer, groups)
    first = stream.read_group(0)
    return replace(stream, checks=replace(checks, seq_len=first.seq_len))
