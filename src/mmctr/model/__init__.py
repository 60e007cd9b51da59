"""Models: layers, the seed model and its variants, the DIN baseline. Imports only torch."""

from mmctr.config.model import ModelConfig
from mmctr.model.base import CTRModel, DataDims
from mmctr.model.cost import macs_per_sample, parameter_counts
from mmctr.model.din import DIN
from mmctr.model.factory import build_model
from mmctr.model.seed import SeedCTR

__all__ = [
    "DIN",
    "CTRModel",
    "DataDims",
    "ModelConfig",
    "SeedCTR",
    "build_model",
    "macs_per_sample",
    "parameter_counts",
]
