"""Deterministic synthetic data in the MicroLens-1M MMCTR layout, with planted structure.

The signal is planted where only some models can reach it (drifting interests in the history,
topic and quality in the frozen embeddings), so a history-aware multimodal model must win.

preset  SynthPreset, the named PRESETS, and PLANTED (what dataset.json says was planted)
world   the latent items and users (topics, popularity, quality, embeddings, tags, mixtures)
rows    the rows of each split, streamed to parquet
core    generate(): every file into a temporary folder, then moved into place
"""

from mmctr.prepare.synth.core import generate
from mmctr.prepare.synth.preset import PLANTED, PRESETS, SynthPreset

__all__ = ["PLANTED", "PRESETS", "SynthPreset", "generate"]
