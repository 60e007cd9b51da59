"""mmctr: multimodal click-through-rate prediction on PyTorch.

The seed model is the 1st-place solution of the WWW 2025 EReL@MIR multimodal CTR challenge:
a Transformer over the user's history with the target concatenated to every item, a DCNv2
cross network beside a deep MLP, and a prediction MLP.

For notebooks: ``mmctr.train(data_dir, config, out)``, ``mmctr.load_run(run_dir, data_dir)``
(see ``mmctr.api``).
"""

from mmctr.api import Scorer, load_run, train
from mmctr.config import Config, load_config
from mmctr.config.train import TrainConfig
from mmctr.data import DataConfig, DataSchema, Dataset, load_dataset
from mmctr.model import (
    DIN,
    DataDims,
    ModelConfig,
    SeedCTR,
    build_model,
    macs_per_sample,
    parameter_counts,
)

__version__ = "0.1.0"

__all__ = [
    "DIN",
    "Config",
    "DataConfig",
    "DataDims",
    "DataSchema",
    "Dataset",
    "ModelConfig",
    "Scorer",
    "SeedCTR",
    "TrainConfig",
    "build_model",
    "load_config",
    "load_dataset",
    "load_run",
    "macs_per_sample",
    "parameter_counts",
    "train",
]
