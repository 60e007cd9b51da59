"""``mmctr train --nproc N``: the same command started N times by torchrun on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from mmctr.runtime import available_cpus


def without_nproc(argv: Sequence[str]) -> list[str]:
    """``argv`` less its ``--nproc N`` / ``--nproc=N``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """torchrun (``python -m torch.distributed.run``) on one machine, on a free port, starting
    ``python -m mmctr`` with ``argv`` (without ``--nproc``) in each of ``nproc`` processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={nproc}", "-m", "mmctr", *without_nproc(argv)]  # fmt: skip


def run_torchrun(nproc: int, argv: Sequence[str]) -> int:
    """Run the command in ``nproc`` processes and return torchrun's exit code. Each process
    gets an equal share of the CPU's cores as its threads unless OMP_NUM_THREADS says."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, available_cpus() // nproc))
    return subprocess.run(torchrun_command(nproc, argv), env=env, check=False).returncode
