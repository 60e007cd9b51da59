"""Typed configuration: one frozen dataclass per section, and TOML presets turned into them.

The lowest layer of the house: data, model and training each read their own section from
here, and nothing here imports them. Model kinds register their own section
(``kinds.py``); ``presets/`` holds the shipped TOML files (package data; ``configs/`` at the
repository root links to it).
"""

from mmctr.config.data import DataConfig
from mmctr.config.dims import DataDims
from mmctr.config.kinds import kind_names
from mmctr.config.load import SECTIONS, Config, load_config, preset_names
from mmctr.config.model import BeyondConfig, MaskMode, ModelConfig
from mmctr.config.train import TrainConfig

__all__ = [
    "SECTIONS",
    "BeyondConfig",
    "Config",
    "DataConfig",
    "DataDims",
    "MaskMode",
    "ModelConfig",
    "TrainConfig",
    "kind_names",
    "load_config",
    "preset_names",
]
