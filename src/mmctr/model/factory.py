"""Build the model a config asks for."""

from __future__ import annotations

from mmctr.config.model import ModelConfig
from mmctr.model.base import CTRModel, DataDims
from mmctr.model.din import DIN
from mmctr.model.seed import SeedCTR


def build_model(cfg: ModelConfig, dims: DataDims) -> CTRModel:
    """``SeedCTR`` for ``kind = "seed"``, ``DIN`` for ``kind = "din"``."""
    if cfg.kind == "din":
        return DIN(cfg, dims)
    return SeedCTR(cfg, dims)
