"""``mmctr export``: a trained run as a self-contained ONNX or TorchScript scoring graph.

The graph has a fixed layout (no data-dependent shapes), the item feature tables baked in and
a dynamic batch dimension; docs/serving.md (section Export) gives its inputs and outputs.
"""

from mmctr.export.graph import INPUT_NAMES, OUTPUT_NAMES, Interface, fit_history
from mmctr.export.write import FORMATS, export_run

__all__ = ["FORMATS", "INPUT_NAMES", "OUTPUT_NAMES", "Interface", "export_run", "fit_history"]
