"""bench/gpu.sh runs end to end (on the CPU here, with a small config and the tiny preset)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_smoke_run_on_cpu(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "PY": sys.executable,
        "PRESET": "tiny",
        "CONFIG": str(ROOT / "configs" / "cpu.toml"),
        "BATCHES": "512",
        "PRECISIONS": "fp32 bf16",
        "NPROCS": "1 all 2",  # all: no GPU here, so none; 2: data-parallel on the CPU
        "DATA": str(tmp_path / "data"),
        "OUT": str(tmp_path / "runs"),
    }
    done = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for precision in ("fp32", "bf16"):
        for nproc in (1, 2):
            result = [x for x in lines if x.startswith(f"RESULT {precision} batch 512 x{nproc}:")]
            assert result and "samples/s" in result[0] and "epoch" in result[0]
    assert len(list((tmp_path / "runs").iterdir())) == 4
