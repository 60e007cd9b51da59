"""Data-parallel training across processes: who this process is, its rows, and agreement.

``torchrun`` starts N copies of ``mmctr train`` and tells each its ``RANK``, ``LOCAL_RANK`` and
``WORLD_SIZE``; ``join_from_env`` joins them into one process group (gloo on CPUs, NCCL on
GPUs). Training then uses ``World``: every process walks the same seeded global order of
batches of ``train.batch_size`` rows and takes its own share of each, so a config trains the
same model whatever N is; gradients are averaged by DistributedDataParallel; validation is
scored in shares and gathered, so early stopping and lr decay are decided from the same
numbers everywhere; only rank 0 writes files and logs.

A plain ``mmctr train`` (no ``WORLD_SIZE``) is a world of one and touches none of this.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from mmctr.data import Shard
from mmctr.errors import ConfigError

# how long a rank waits for the others in one collective before failing (not hanging):
# long enough for rank 0 to write a paper-size checkpoint between epochs
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class World(Shard):
    """This process's place among the training processes (a world of one when alone)."""

    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def gather(self, local: np.ndarray) -> np.ndarray:
        """Every rank's ``local`` array, concatenated in rank order, on every rank."""
        if not self.active:
            return local
        parts: list[Any] = [None] * self.size
        dist.all_gather_object(parts, local)
        return np.concatenate(parts)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over ranks (in place, returned)."""
        if self.active:
            dist.all_reduce(tensor)
        return tensor


def current() -> World:
    """The world of the process group this process has joined, or a world of one."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    return World(rank=dist.get_rank(), size=dist.get_world_size(), local_rank=local)


def launched() -> bool:
    """Whether torchrun (or another launcher setting ``WORLD_SIZE``) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launch_rank() -> int:
    """The rank torchrun gave this process (0 when none), readable before joining."""
    return int(os.environ.get("RANK", "0"))


def join_from_env(device: str = "auto") -> World:
    """Join the process group torchrun describes in the environment; a world of one without.

    The backend is NCCL when this process trains on a GPU (``train.device`` auto with one
    visible, or cuda), else gloo.
    """
    if not launched():
        return World()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed")
    if dist.is_initialized():
        return current()
    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if gpu:
        torch.cuda.set_device(local)
    dist.init_process_group("nccl" if gpu else "gloo", timeout=TIMEOUT)
    return current()


def leave() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_for(world: World, device: torch.device) -> torch.device:
    """A GPU rank trains on its own GPU (``LOCAL_RANK``); a CPU rank on the CPU."""
    if world.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", world.local_rank)
    return device
