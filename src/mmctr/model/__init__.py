"""Models: layers, the model kinds (the target-aware Transformer of the 1st place, the DIN
baseline) and the factory that registers and builds them. Imports only torch and config.

A new kind is one file: a ``CTRModel`` subclass and its ``[model.<kind>]`` dataclass, registered
with ``register_model`` (see ``model/factory.py``), imported below or by the user's code.
"""

from mmctr.config.dims import DataDims
from mmctr.config.model import ModelConfig
from mmctr.model.base import PLAIN, CTRModel, Execution
from mmctr.model.cost import macs_per_sample, parameter_counts
from mmctr.model.din import DIN, DINConfig
from mmctr.model.factory import build_model, model_class, register_model
from mmctr.model.item_fit import fit_items
from mmctr.model.qin import QIN, QINConfig
from mmctr.model.target_transformer import TargetTransformerConfig, TargetTransformerCTR

SeedCTR = TargetTransformerCTR  # the name of mmctr 0.1

__all__ = [
    "DIN",
    "PLAIN",
    "QIN",
    "CTRModel",
    "DINConfig",
    "DataDims",
    "Execution",
    "ModelConfig",
    "QINConfig",
    "SeedCTR",
    "TargetTransformerCTR",
    "TargetTransformerConfig",
    "build_model",
    "fit_items",
    "macs_per_sample",
    "model_class",
    "parameter_counts",
    "register_model",
]
