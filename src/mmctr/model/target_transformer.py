"""The target-aware Transformer CTR model: the 1st-place solution of the WWW 2025 EReL@MIR
multimodal CTR challenge (kind ``target_transformer``; ``seed``, its first name here, is an
alias).

item vectors -> Transformer(history ++ target) -> interest
x0 = [context, target, interest] -> CrossNetwork(x0) ++ MLP(x0) -> prediction MLP -> logit
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mmctr.config.checks import check_fields
from mmctr.config.dims import DataDims
from mmctr.config.model import MaskMode, ModelConfig
from mmctr.model.base import CTRModel, Execution
from mmctr.model.factory import register_model
from mmctr.model.layers import MLP, CrossNetwork, linear_macs, reset_parameters
from mmctr.model.sequence import TargetAwareTransformer, trim_history

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["TargetTransformerCTR", "TargetTransformerConfig"]


@dataclass(frozen=True)
class TargetTransformerConfig:
    """``[model.target_transformer]``: the sequence module, the towers and the head."""

    # sequence module: Transformer over history items, each concatenated with the target
    use_sequence: bool = True
    target_concat: bool = True
    num_layers: int = 2
    num_heads: int = 1
    ff_dim: int = 256
    seq_dropout: float = 0.2
    first_k: int = 16  # flatten the outputs at the last first_k positions
    max_pool: bool = True  # ++ Linear(max-pool over real positions)
    mask: MaskMode = "correct"  # "released" reproduces the release's inverted padding mask
    # beyond the paper (docs/beyond.md), off by default
    similarity_input: bool = False  # cosine(target, history item) added to each token
    positions: bool = False  # learned embedding of each history position (from the newest)
    # feature interaction: DCNv2 cross network in parallel with a deep MLP
    use_cross: bool = True
    num_cross_layers: int = 3
    cross_rank: int = 0  # 0: full-rank W (the paper's); r > 0: W = U V with U, V of rank r
    deep_mlp: tuple[int, ...] = (1024, 512, 256)
    deep_dropout: float = 0.2
    # prediction head
    pred_mlp: tuple[int, ...] = (64, 32)

    def __post_init__(self) -> None:
        section = "model.target_transformer"
        check_fields(
            self,
            section,
            at_least_one=("num_layers", "num_heads", "ff_dim", "first_k", "deep_mlp", "pred_mlp"),
            at_least_zero=("cross_rank", "num_cross_layers"),
            probabilities=("seq_dropout", "deep_dropout"),
        )
        if not self.deep_mlp and not self.use_cross:
            raise ValueError(f"{section}.deep_mlp is empty and use_cross is false: nothing left")

    def check_with(self, model: ModelConfig) -> None:
        """The rules that read the shared [model] keys too."""
        if self.first_k > model.max_len:
            raise ValueError(
                f"model.target_transformer.first_k ({self.first_k}) cannot exceed "
                f"model.max_len ({model.max_len})"
            )


@register_model("target_transformer", TargetTransformerConfig, aliases=("seed",))
class TargetTransformerCTR(CTRModel):
    """Returns click logits; the loss lives in training.

    Shape: history (B, L), target (B,), context (B, F) int ids -> (B,) logits.
    """

    def __init__(self, cfg: ModelConfig, dims: DataDims) -> None:
        super().__init__()
        self._init_inputs(cfg, dims)
        p = self.params = cfg.section(TargetTransformerConfig)
        self.sequence: TargetAwareTransformer | None = None
        x0_dim = self.context.out_dim + self.items.out_dim
        if p.use_sequence:
            self.sequence = TargetAwareTransformer(
                item_dim=self.items.out_dim, target_concat=p.target_concat,
                num_layers=p.num_layers, num_heads=p.num_heads, ff_dim=p.ff_dim,
                dropout=p.seq_dropout, first_k=p.first_k, max_pool=p.max_pool, mask=p.mask,
                similarity_input=p.similarity_input, positions=cfg.max_len if p.positions else 0,
            )  # fmt: skip
            x0_dim += self.sequence.out_dim
        self.cross = (
            CrossNetwork(dim=x0_dim, num_layers=p.num_cross_layers, rank=p.cross_rank)
            if (p.use_cross and p.num_cross_layers > 0)
            else None
        )
        self.deep = (
            MLP(in_dim=x0_dim, hidden=p.deep_mlp, dropout=p.deep_dropout) if p.deep_mlp else None
        )
        head_in = (x0_dim if self.cross is not None else 0) + (
            self.deep.out_dim if self.deep is not None else 0
        )
        head: list[nn.Module] = []
        if p.pred_mlp:
            mlp = MLP(in_dim=head_in, hidden=p.pred_mlp)
            head.append(mlp)
            head_in = mlp.out_dim
        head.append(nn.Linear(head_in, 1))
        self.head = nn.Sequential(*head)
        self.x0_dim = x0_dim
        reset_parameters(self)
        self.set_execution(self.fastest_execution())

    # -- execution: trimming and packing are exact under the correct mask; sharing a
    # history's work among its rows needs tokens that differ by the target alone
    def fastest_execution(self) -> Execution:
        inert = self.padding_inert
        shares = self.sequence is None or not self.sequence.reads_ids
        return Execution(trim_padding=inert, pack_tokens=inert, share_histories=shares)

    def check_execution(self, execution: Execution) -> None:
        best = self.fastest_execution()
        refused: Iterable[str] = [
            name
            for name in ("trim_padding", "pack_tokens", "share_histories")
            if getattr(execution, name) and not getattr(best, name)
        ]
        for name in refused:
            why = (
                "padding is not inert under mask = 'released'"
                if name != "share_histories"
                else "similarity or position inputs make each row's tokens its own"
            )
            raise ValueError(f"execution {name} is not exact for this model: {why}")

    @property
    def mask(self) -> MaskMode:
        return self.params.mask

    @property
    def reads_history(self) -> bool:
        return self.sequence is not None

    def window(self, history: torch.Tensor) -> torch.Tensor:
        """The last ``max_len`` positions, less (when trimming) the leading columns that are
        padding in every row; left-padded with id 0 to at least ``first_k`` positions so that
        the last-k flatten has k of them."""
        first_k = self.params.first_k
        history = history[:, -self.cfg.max_len :]
        if self.execution.trim_padding:
            history = trim_history(history, first_k)
        if history.shape[1] < first_k:
            history = F.pad(history, (first_k - history.shape[1], 0))
        return history

    def _interest(
        self, history: torch.Tensor, target: torch.Tensor, target_vec: torch.Tensor
    ) -> torch.Tensor:
        assert self.sequence is not None
        history = self.window(history)
        real = history.ne(0)
        packs = self.execution.pack_tokens
        if packs:  # real items only, row-major
            ids, their_target = history[real], target[real.nonzero()[:, 0]]
        else:
            ids, their_target = history, target.unsqueeze(1).expand_as(history)
        sim = None
        if self.sequence.sim_proj is not None:
            sim = self.items.similarity(ids, their_target)
        if packs:
            return self.sequence.forward_packed(self.items(ids), target_vec, real, sim)
        return self.sequence(self.items(ids), target_vec, real, sim)  # (B, L, Di) in

    def forward(
        self, history: torch.Tensor, target: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        target_vec = self.items(target)  # (B, Di)
        parts = [self.context(context), target_vec]
        if self.sequence is not None:
            parts.append(self._interest(history, target, target_vec))
        return self._towers(torch.cat(parts, dim=-1))

    def forward_groups(
        self,
        history: torch.Tensor,
        group: torch.Tensor,
        target: torch.Tensor,
        context: torch.Tensor,
    ) -> torch.Tensor:
        """``forward(history[group], target, context[group])``; when the execution shares
        histories, each history is encoded once and its part of the Transformer's first
        projection shared among its rows (``TargetAwareTransformer.forward_groups``): what a
        ranking service scores, a few hundred candidates against one user's history."""
        if not self.execution.share_histories:
            return super().forward_groups(history, group, target, context)
        target_vec = self.items(target)  # (B, Di)
        parts = [self.context(context)[group], target_vec]
        if self.sequence is not None:
            history = self.window(history)  # (G, L): the same columns as for history[group]
            packed = self.execution.pack_tokens
            parts.append(
                self.sequence.forward_groups(
                    self.items(history), history.ne(0), target_vec, group, packed=packed
                )
            )
        return self._towers(torch.cat(parts, dim=-1))

    def _towers(self, x0: torch.Tensor) -> torch.Tensor:
        """Cross network ++ deep MLP -> prediction head. Shape: (B, x0_dim) -> (B,) logits."""
        towers = []
        if self.cross is not None:
            towers.append(self.cross(x0))
        if self.deep is not None:
            towers.append(self.deep(x0))
        return self.head(torch.cat(towers, dim=-1)).squeeze(-1)

    def macs(self, history_len: int) -> dict[str, int]:
        out = {"sequence": 0, "cross": linear_macs(self.cross), "deep": linear_macs(self.deep)}
        out["head"] = linear_macs(self.head)
        if self.sequence is not None:
            seq, d = self.sequence, self.sequence.d_model
            per_token = 3 * d * d + d * d + 2 * d * self.params.ff_dim + 2 * history_len * d
            out["sequence"] = len(seq.layers) * history_len * per_token + linear_macs(seq.pool)
        return out
