"""train.embedding_reg: (reg / 2) |P|^2 on the item and context encoders' parameters, as
FuxiCTR's embedding regulariser (QIN's release sets it): in the loss, so clipped with it."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from model_helpers import left_padded_batch, model_config

from mmctr.config import TrainConfig
from mmctr.data import Batch
from mmctr.errors import ConfigError
from mmctr.model import DataDims, build_model
from mmctr.training.epoch import train_step
from mmctr.training.loop import make_optimizer

DIMS = DataDims(num_items=30, num_tags=7, tags_per_item=2, emb_dim=5, context_vocab_sizes=(11, 11))
FLAT = dict(kind="qin", id_dim=4, tag_dim=4, mm_dim=4, context_dim=2, max_len=8)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = model_config(**FLAT).replace_section(dropout=0.0)  # the two passes must agree
    return build_model(config, DIMS).double().train()


def _encoder_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [
        *model.get_submodule("items").parameters(),
        *model.get_submodule("context").parameters(),
    ]


@pytest.mark.parametrize("clip", [0.0, 0.05])  # 0.05: the clip scales the penalty's gradient
def test_a_step_equals_one_on_the_penalised_loss_clipped_together(clip: float) -> None:
    reg = 0.3
    train = TrainConfig(lr=1e-2, fused_adam=False, grad_clip=clip)
    history, target, context = left_padded_batch([0, 3, 8], DIMS, seq_len=8)
    labels = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    ours, theirs = _model(), _model()
    opt = make_optimizer(ours, replace(train, embedding_reg=reg))
    loss = train_step(
        ours, opt, Batch(history, target, context, labels), replace(train, embedding_reg=reg)
    )
    plain = make_optimizer(theirs, train)
    data_loss = F.binary_cross_entropy_with_logits(theirs(history, target, context), labels)
    penalty = sum((p**2).sum() for p in _encoder_params(theirs))
    (data_loss + reg / 2 * penalty).backward()
    if clip:
        torch.nn.utils.clip_grad_norm_(theirs.parameters(), clip)
    plain.step()
    assert float(loss) == pytest.approx(float(data_loss.detach()), rel=1e-12)  # reported without it
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-12), name


def test_a_negative_or_nan_regulariser_is_refused() -> None:
    from mmctr.config import load_config

    with pytest.raises(ConfigError, match=r"train\.embedding_reg"):
        load_config("qin-cpu", ["train.embedding_reg=-1"])
    with pytest.raises(ConfigError, match="finite"):
        load_config("qin-cpu", ["train.embedding_reg=nan"])
