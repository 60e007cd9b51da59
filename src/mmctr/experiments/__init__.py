"""Experiments over many runs: ablations (paper Table 2), sweeps (Fig. 2), peers (the 1st
place beside QIN, DIN and their ensemble), attention maps.

Each run goes through the ordinary training loop into its own run directory; see
docs/experiments.md.
"""

from mmctr.experiments.experiment import ExperimentResult, run_experiment
from mmctr.experiments.peers import PEERS, peers_plan
from mmctr.experiments.plan import ABLATION, Job, Plan, ablation_plan, sweep_plan

__all__ = [
    "ABLATION",
    "PEERS",
    "ExperimentResult",
    "Job",
    "Plan",
    "ablation_plan",
    "peers_plan",
    "run_experiment",
    "sweep_plan",
]
