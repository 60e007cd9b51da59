"""Experiments over many runs: ablations (paper Table 2), sweeps (Fig. 2), attention maps.

Each run goes through the ordinary training loop into its own run directory; see
docs/experiments.md.
"""

from mmctr.experiments.experiment import ExperimentResult, run_experiment
from mmctr.experiments.plan import ABLATION, Job, Plan, ablation_plan, sweep_plan

__all__ = [
    "ABLATION",
    "ExperimentResult",
    "Job",
    "Plan",
    "ablation_plan",
    "run_experiment",
    "sweep_plan",
]
