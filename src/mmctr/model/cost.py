"""What a model costs: parameters by part and forward multiply-adds per sample."""

from __future__ import annotations

from torch import nn

from mmctr.model.base import CTRModel


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Trainable parameter count of each top-level part, plus ``total``."""
    counts = {
        name: sum(p.numel() for p in child.parameters() if p.requires_grad)
        for name, child in model.named_children()
    }
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def reads_history(model: CTRModel) -> bool:
    """Whether the model's cost depends on the history length."""
    return model.reads_history


def macs_per_sample(model: CTRModel, history_len: int | None = None) -> dict[str, int]:
    """Forward multiply-adds of one sample, by part, with ``total``.

    Counts the matrix products (Linear layers and attention products); element-wise work,
    batch norm, embedding look-ups and the tag mean are left out, being small beside them.
    ``history_len`` is the number of history positions computed (default ``max_len``). The
    item encoder's share is counted here; each kind counts its own parts (``CTRModel.macs``).
    """
    length = model.cfg.max_len if history_len is None else history_len
    items_encoded = 1 + (length if model.reads_history else 0)
    proj = model.items.mm_proj
    proj_macs = proj.in_features * proj.out_features if proj is not None else 0
    out = {"items": items_encoded * proj_macs, **model.macs(length)}
    out["total"] = sum(out.values())
    return out
