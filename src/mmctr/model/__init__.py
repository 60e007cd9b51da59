"""Models: layers, the seed model and its variants. Imports only torch."""

from mmctr.model.config import ModelConfig
from mmctr.model.cost import macs_per_sample, parameter_counts
from mmctr.model.seed import DataDims, SeedCTR

__all__ = ["DataDims", "ModelConfig", "SeedCTR", "macs_per_sample", "parameter_counts"]
