"""train.embedding_reg: (reg / 2) |P|^2 on the item and context encoders' parameters, as
FuxiCTR's embedding regulariser (QIN's release sets it), through Adam's weight decay."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from model_helpers import left_padded_batch, model_config

from mmctr.config import TrainConfig
from mmctr.errors import ConfigError
from mmctr.model import DataDims, build_model
from mmctr.training.loop import make_optimizer

DIMS = DataDims(num_items=30, num_tags=7, tags_per_item=2, emb_dim=5, context_vocab_sizes=(11, 11))
FLAT = dict(kind="qin", id_dim=4, tag_dim=4, mm_dim=4, context_dim=2, max_len=8)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    config = model_config(**FLAT).replace_section(dropout=0.0)  # the two passes must agree
    return build_model(config, DIMS).double()


def _encoder_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [
        *model.get_submodule("items").parameters(),
        *model.get_submodule("context").parameters(),
    ]


def test_one_step_equals_adam_on_the_penalised_loss() -> None:
    reg, train = 0.3, TrainConfig(lr=1e-2, fused_adam=False)
    history, target, context = left_padded_batch([0, 3, 8], DIMS, seq_len=8)
    labels = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    ours, theirs = _model(), _model()
    ours.train(), theirs.train()
    opt = make_optimizer(ours, replace(train, embedding_reg=reg))
    F.binary_cross_entropy_with_logits(ours(history, target, context), labels).backward()
    opt.step()
    plain = make_optimizer(theirs, train)
    loss = F.binary_cross_entropy_with_logits(theirs(history, target, context), labels)
    penalty = sum((p**2).sum() for p in _encoder_params(theirs))
    (loss + reg / 2 * penalty).backward()
    plain.step()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-12), name


def test_groups_only_when_asked() -> None:
    model = _model()
    assert len(make_optimizer(model, TrainConfig(fused_adam=False)).param_groups) == 1
    opt = make_optimizer(
        model, TrainConfig(fused_adam=False, embedding_reg=2e-4, weight_decay=1e-5)
    )
    first, rest = opt.param_groups
    assert {id(p) for p in first["params"]} == {id(p) for p in _encoder_params(model)}
    assert first["weight_decay"] == pytest.approx(2e-4 + 1e-5)
    assert rest["weight_decay"] == pytest.approx(1e-5)
    assert len(first["params"]) + len(rest["params"]) == len(list(model.parameters()))
    copy.deepcopy(opt.state_dict())  # savable like the one-group optimiser


def test_a_negative_or_nan_regulariser_is_refused() -> None:
    from mmctr.config import load_config

    with pytest.raises(ConfigError, match=r"train\.embedding_reg"):
        load_config("qin-cpu", ["train.embedding_reg=-1"])
    with pytest.raises(ConfigError, match="finite"):
        load_config("qin-cpu", ["train.embedding_reg=nan"])
