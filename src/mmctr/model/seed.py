"""The seed model: the 1st-place solution of the WWW 2025 EReL@MIR multimodal CTR challenge.

item vectors -> Transformer(history ++ target) -> interest
x0 = [context, target, interest] -> CrossNetwork(x0) ++ MLP(x0) -> prediction MLP -> logit
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmctr.config.model import ModelConfig
from mmctr.model.base import CTRModel, DataDims
from mmctr.model.encoder import EncoderLayer
from mmctr.model.item import EMBEDDING_INIT_STD
from mmctr.model.layers import MLP, CrossNetwork
from mmctr.model.sequence import TargetAwareTransformer, trim_history

__all__ = ["DataDims", "SeedCTR", "reset_parameters"]


class SeedCTR(CTRModel):
    """Returns click logits; the loss lives in training.

    Shape: history (B, L), target (B,), context (B, F) int ids -> (B,) logits.
    """

    def __init__(self, cfg: ModelConfig, dims: DataDims) -> None:
        super().__init__()
        self._init_inputs(cfg, dims)
        self.sequence: TargetAwareTransformer | None = None
        x0_dim = self.context.out_dim + self.items.out_dim
        if cfg.use_sequence:
            self.sequence = TargetAwareTransformer(cfg, item_dim=self.items.out_dim)
            x0_dim += self.sequence.out_dim
        self.cross = (
            CrossNetwork(dim=x0_dim, num_layers=cfg.num_cross_layers, rank=cfg.cross_rank)
            if (cfg.use_cross and cfg.num_cross_layers > 0)
            else None
        )
        self.deep = (
            MLP(in_dim=x0_dim, hidden=cfg.deep_mlp, dropout=cfg.deep_dropout)
            if (cfg.deep_mlp)
            else None
        )
        head_in = (x0_dim if self.cross is not None else 0) + (
            self.deep.out_dim if self.deep is not None else 0
        )
        if head_in == 0:
            raise ValueError("model has neither a cross network nor a deep MLP")
        head: list[nn.Module] = []
        if cfg.pred_mlp:
            mlp = MLP(in_dim=head_in, hidden=cfg.pred_mlp)
            head.append(mlp)
            head_in = mlp.out_dim
        head.append(nn.Linear(head_in, 1))
        self.head = nn.Sequential(*head)
        self.x0_dim = x0_dim
        reset_parameters(self)

    def window(self, history: torch.Tensor) -> torch.Tensor:
        """The last ``max_len`` positions; under the correct mask less the leading columns that
        are padding in every row (exact: padding is inert there); left-padded with id 0 to at
        least ``first_k`` positions so that the last-k flatten has k of them."""
        cfg = self.cfg
        history = history[:, -cfg.max_len :]
        if cfg.trim_padding and cfg.mask == "correct":
            history = trim_history(history, cfg.first_k)
        if history.shape[1] < cfg.first_k:
            history = F.pad(history, (cfg.first_k - history.shape[1], 0))
        return history

    @property
    def _packs(self) -> bool:
        """Whether the Transformer runs on real tokens only (padding is inert only under the
        correct mask)."""
        return self.cfg.pack_tokens and self.cfg.mask == "correct"

    def _interest(
        self, history: torch.Tensor, target: torch.Tensor, target_vec: torch.Tensor
    ) -> torch.Tensor:
        assert self.sequence is not None
        history = self.window(history)
        real = history.ne(0)
        if self._packs:  # real items only, row-major
            ids, their_target = history[real], target[real.nonzero()[:, 0]]
        else:
            ids, their_target = history, target.unsqueeze(1).expand_as(history)
        sim = None
        if self.sequence.sim_proj is not None:
            sim = self.items.similarity(ids, their_target)
        if self._packs:
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
        """``forward(history[group], target, context[group])``, encoding each history once and
        sharing its part of the Transformer's first projection among its rows (see
        ``TargetAwareTransformer.forward_groups``): what a ranking service scores, a few
        hundred candidates against one user's history. With similarity or position inputs
        the rows are scored one by one (their tokens differ by more than the target)."""
        if self.sequence is not None and self.sequence.reads_ids:
            return super().forward_groups(history, group, target, context)
        target_vec = self.items(target)  # (B, Di)
        parts = [self.context(context)[group], target_vec]
        if self.sequence is not None:
            history = self.window(history)  # (G, L): the same columns as for history[group]
            parts.append(
                self.sequence.forward_groups(
                    self.items(history), history.ne(0), target_vec, group, packed=self._packs
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


def reset_parameters(model: nn.Module) -> None:
    """The release's init: embeddings N(0, 1e-4) with a zero padding row; Linear Xavier-normal,
    zero bias; the attention's projections as ``nn.MultiheadAttention`` initialises them."""
    for module in model.modules():
        if isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=EMBEDDING_INIT_STD)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.Linear):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, EncoderLayer):
            module.reset_attention()
