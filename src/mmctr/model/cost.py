"""What a model costs: parameters by part and forward multiply-adds per sample."""

from __future__ import annotations

from torch import nn

from mmctr.model.base import CTRModel
from mmctr.model.din import DIN
from mmctr.model.seed import SeedCTR


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameter count of each top-level part, plus ``total``."""
    counts = {
        name: sum(p.numel() for p in child.parameters() if p.requires_grad)
        for name, child in model.named_children()
    }
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def _mlp_macs(module: nn.Module | None) -> int:
    if module is None:
        return 0
    return sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


def reads_history(model: CTRModel) -> bool:
    """Whether the model's cost depends on the history length."""
    return not isinstance(model, SeedCTR) or model.sequence is not None


def macs_per_sample(model: CTRModel, history_len: int | None = None) -> dict[str, int]:
    """Forward multiply-adds of one sample, by part, with ``total``.

    Counts the matrix products (Linear layers and the two attention products); element-wise
    work, batch norm, embedding look-ups and the tag mean are left out, being small beside them.
    ``history_len`` is the number of history positions computed (default ``max_len``).
    """
    cfg = model.cfg
    length = cfg.max_len if history_len is None else history_len
    items_encoded = 1 + (length if reads_history(model) else 0)
    proj = model.items.mm_proj
    proj_macs = proj.in_features * proj.out_features if proj is not None else 0
    out = {"items": items_encoded * proj_macs}
    if isinstance(model, DIN):
        out["attention"] = length * _mlp_macs(model.attention)
        out["head"] = _mlp_macs(model.head)
    elif isinstance(model, SeedCTR):
        out.update(sequence=0, cross=_mlp_macs(model.cross), deep=_mlp_macs(model.deep))
        out["head"] = _mlp_macs(model.head)
        if model.sequence is not None:
            seq = model.sequence
            d = seq.d_model
            per_token = 3 * d * d + d * d + 2 * d * cfg.ff_dim + 2 * length * d
            out["sequence"] = len(seq.layers) * length * per_token + _mlp_macs(seq.pool)
    else:
        raise TypeError(f"no cost model for {type(model).__name__}")
    out["total"] = sum(out.values())
    return out
