"""mmctr: multimodal click-through-rate prediction on PyTorch.

The main model is the 1st-place solution of the WWW 2025 EReL@MIR multimodal CTR challenge
(``kind = "target_transformer"``): a Transformer over the user's history with the target
concatenated to every item, a DCNv2 cross network beside a deep MLP, and a prediction MLP.

For notebooks: ``mmctr.train(data_dir, config, out)``, ``mmctr.load_run(run_dir, data_dir)``
(see ``mmctr.api``), ``mmctr.load_ensemble(run_dirs, data_dir)`` (several runs scored as one,
``mmctr.ensemble``). A new model kind is one file registered with ``mmctr.register_model``.
"""

from mmctr.api import Scorer, load_run, train
from mmctr.config import Config, load_config
from mmctr.config.train import TrainConfig
from mmctr.data import DataConfig, DataSchema, Dataset, load_dataset
from mmctr.ensemble import EnsembleScorer, load_ensemble
from mmctr.model import (
    DIN,
    CTRModel,
    DataDims,
    Execution,
    ModelConfig,
    SeedCTR,
    TargetTransformerCTR,
    build_model,
    macs_per_sample,
    parameter_counts,
    register_model,
)
from mmctr.training.summary import Metrics, RunSummary
from mmctr.version import mmctr_version

__version__ = mmctr_version()  # the package metadata's (pyproject.toml), read at import

__all__ = [
    "DIN",
    "CTRModel",
    "Config",
    "DataConfig",
    "DataDims",
    "DataSchema",
    "Dataset",
    "EnsembleScorer",
    "Execution",
    "Metrics",
    "ModelConfig",
    "RunSummary",
    "Scorer",
    "SeedCTR",
    "TargetTransformerCTR",
    "TrainConfig",
    "build_model",
    "load_config",
    "load_dataset",
    "load_ensemble",
    "load_run",
    "macs_per_sample",
    "parameter_counts",
    "register_model",
    "train",
]
