"""QIN, the Quadratic Interest Network: the 2nd place of the WWW 2025 EReL@MIR multimodal CTR
challenge (team DISCO.AHU, arXiv 2504.17699; release ``QIN_variety_v9`` on FuxiCTR 2.3.7), on
the inputs every kind shares.

item vectors -> ReLU target attention: interest = W_o sum_i ReLU(q . k_i / sqrt(A)) v_i + t
[context, target, interest] -> quadratic network (x <- x + PReLU(BN(x * sum_r W_r x))) -> logit

The attention's weights are neither softmax-normalised nor bounded: a history that matches
the target more pools to a larger vector. docs/qin.md maps each part to the release.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmctr.config.checks import check_fields
from mmctr.config.dims import DataDims
from mmctr.config.model import ModelConfig
from mmctr.model.factory import register_model
from mmctr.model.layers import linear_macs, reset_parameters
from mmctr.model.pooling import FAST, PooledInterestCTR, one_row_safe
from mmctr.model.qin_layers import QuadraticNetwork, ReLUTargetAttention


@dataclass(frozen=True)
class QINConfig:
    """``[model.qin]``: the attention's width and the quadratic network; defaults are the
    release's ``QIN_variety_v9`` config."""

    attention_mult: int = 2  # query / key / value width as a multiple of the item width
    num_layers: int = 4  # quadratic blocks (0: the logit is linear in the inputs)
    num_rows: int = 4  # rows summed inside each quadratic layer (the release's num_row)
    dropout: float = 0.1  # inside each quadratic layer and after each PReLU
    batch_norm: bool = True  # BatchNorm1d after each quadratic layer

    def __post_init__(self) -> None:
        check_fields(
            self,
            "model.qin",
            at_least_one=("attention_mult", "num_rows"),
            at_least_zero=("num_layers",),
            probabilities=("dropout",),
        )


@register_model("qin", QINConfig)
class QIN(PooledInterestCTR):
    """Returns click logits; shares ``ItemEncoder`` and ``ContextEncoder`` with the other kinds.

    Reads the shared [model] keys (items, context, ``max_len``) and its own [model.qin]. Starts
    on its trimmed and packed path (padding gets weight 0 whatever it holds, so both are exact).

    Shape: history (B, L), target (B,), context (B, F) int ids -> (B,) logits.
    """

    attention: ReLUTargetAttention

    def __init__(self, cfg: ModelConfig, dims: DataDims) -> None:
        super().__init__()
        self._init_inputs(cfg, dims)
        p = cfg.section(QINConfig)
        item_dim = self.items.out_dim
        self.attention = ReLUTargetAttention(
            dim=item_dim, attention_dim=p.attention_mult * item_dim
        )
        width = self.context.out_dim + 2 * item_dim
        self.qnn = QuadraticNetwork(
            dim=width,
            num_layers=p.num_layers,
            num_rows=p.num_rows,
            dropout=p.dropout,
            batch_norm=p.batch_norm,
        )
        self.output = nn.Linear(width, 1)
        reset_parameters(self)
        self.set_execution(FAST)

    def macs(self, history_len: int) -> dict[str, int]:
        a = self.attention
        per_item = linear_macs(a.key) + linear_macs(a.value) + 2 * a.key.out_features
        return {
            "attention": linear_macs(a.query) + history_len * per_item + linear_macs(a.output),
            "qnn": linear_macs(self.qnn),
            "output": linear_macs(self.output),
        }

    def top(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(one_row_safe(self.qnn, x)).squeeze(-1)
