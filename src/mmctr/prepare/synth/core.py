"""``generate``: a whole synthetic data set, written atomically (all files or none)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from mmctr.data.layout import ITEM_FILE, META_FILE, OUTPUT_FILES, SPLITS
from mmctr.prepare.synth.preset import PLANTED, PRESETS, SynthPreset
from mmctr.prepare.synth.rows import calibrate_bias, length_stats, write_split
from mmctr.prepare.synth.world import make_world

COUNTED = ("items", "tags", "users", "topics")


def generate(
    out_dir: str | Path,
    preset: str | SynthPreset = "demo",
    *,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Write a synthetic MMCTR data set into ``out_dir``; returns the dataset.json content.

    Same preset and seed give byte-identical files. Files appear only once all are complete.
    """
    if isinstance(preset, str) and preset not in PRESETS:
        raise ValueError(f"unknown synth preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    name, p = ("custom", preset) if isinstance(preset, SynthPreset) else (preset, PRESETS[preset])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        for fname in (*OUTPUT_FILES, META_FILE):
            if (out / fname).exists():
                raise FileExistsError(
                    f"{out / fname} already exists; pass overwrite=True (CLI: --force) to replace"
                )
    tmp = Path(tempfile.mkdtemp(prefix=".synth-tmp-", dir=out))
    try:
        meta = _fill(tmp, name, p, seed, progress)
        for fname in (*OUTPUT_FILES, META_FILE):
            os.replace(tmp / fname, out / fname)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return meta


def _fill(tmp: Path, name: str, p: SynthPreset, seed: int, progress: bool) -> dict[str, Any]:
    item_rng, user_rng, calib_rng, *split_rngs = (
        np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(6)
    )
    world, items = make_world(p, item_rng, user_rng)
    pq.write_table(items, tmp / ITEM_FILE, row_group_size=100_000, compression="zstd")
    del items
    world.bias = calibrate_bias(world, calib_rng)
    sizes = {split: getattr(p, f"num_{split}") for split in SPLITS}
    rates, stats, total_hist = {}, {}, np.zeros(p.seq_len + 1, np.int64)
    total = sum(sizes.values())
    with tqdm(total=total, unit="row", disable=not progress, desc=f"synth {name}") as bar:
        for split, rng in zip(SPLITS, split_rngs, strict=True):
            positives, hist = write_split(tmp / f"{split}.parquet", world, split, rng, bar)
            rates[split] = round(positives / sizes[split], 6)
            stats[split] = length_stats(hist)
            total_hist += hist
    meta: dict[str, Any] = {
        "format": "microlens-1m-mmctr (synthetic)",
        "preset": name,
        "seed": seed,
        "params": asdict(p),
        "counts": {**{k: getattr(p, f"num_{k}") for k in COUNTED}, "rows": sizes},
        "positive_rate": rates,
        "history_length": {**length_stats(total_hist), "per_split": stats},
        "bias": round(world.bias, 6),
        "planted": PLANTED,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return meta
