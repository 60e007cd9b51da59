"""Typed configuration: one frozen dataclass per section, and TOML presets turned into them.

The lowest layer of the house: data, model and training each read their own section from
here, and nothing here imports them. ``presets/`` holds the shipped TOML files (package data;
``configs/`` at the repository root links to it).
"""

from mmctr.config.data import DataConfig
from mmctr.config.load import SECTIONS, Config, load_config, preset_names
from mmctr.config.model import MaskMode, ModelConfig
from mmctr.config.train import TrainConfig

__all__ = [
    "SECTIONS",
    "Config",
    "DataConfig",
    "MaskMode",
    "ModelConfig",
    "TrainConfig",
    "load_config",
    "preset_names",
]
