"""What mmctr matches of the release's training (docs/fidelity.md): init, padding rows, loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_helpers import model_config

from mmctr.config.train import TrainConfig
from mmctr.model import DataDims, SeedCTR
from mmctr.model.encoder import EncoderLayer
from mmctr.training.epoch import train_step

DIMS = DataDims(
    num_items=200, num_tags=30, tags_per_item=5, emb_dim=64, context_vocab_sizes=(11, 11)
)
CFG: dict[str, object] = {  # the flat keys of mmctr 0.1's [model]
    "id_dim": 32,
    "tag_dim": 32,
    "mm_dim": 64,
    "context_dim": 8,
    "max_len": 10,
    "first_k": 2,
    "ff_dim": 32,
    "deep_mlp": (32,),
    "pred_mlp": (16,),
    "seq_dropout": 0.0,
    "deep_dropout": 0.0,
}


def model(**changes: object) -> SeedCTR:
    torch.manual_seed(0)
    m = SeedCTR(model_config(**{**CFG, **changes}), DIMS)
    g = torch.Generator().manual_seed(1)
    tags = torch.randint(1, DIMS.num_tags, (DIMS.num_items, DIMS.tags_per_item), generator=g)
    emb = torch.randn(DIMS.num_items, DIMS.emb_dim, generator=g)
    tags[0], emb[0] = 0, 0.0
    m.items.load_item_features(tags, emb)
    return m


def batch(n: int = 16) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    history = torch.randint(1, DIMS.num_items, (n, 10), generator=g)
    history[:, :4] = 0
    context = torch.randint(0, 11, (n, 2), generator=g)
    context[: n // 2] = 0  # half the rows at level 0 of both fields
    return history, torch.randint(1, DIMS.num_items, (n,), generator=g), context


def test_context_level_zero_is_a_fixed_zero_vector_as_in_the_release() -> None:
    m = model()
    history, target, context = batch()
    m(history, target, context).sum().backward()
    for field in m.context.fields:
        assert torch.equal(field.weight[0], torch.zeros_like(field.weight[0]))
        assert field.weight.grad is not None
        assert torch.equal(field.weight.grad[0], torch.zeros_like(field.weight.grad[0]))
        assert field.weight.grad[1:].abs().sum() > 0
    # the switch gives level 0 a trained vector like any other level
    off = model(context_padding=False)
    assert off.context.fields[0].weight[0].abs().sum() > 0


def test_attention_projections_start_as_nn_multihead_attention_does() -> None:
    torch.manual_seed(0)
    d = 512
    layer = EncoderLayer(d_model=d, num_heads=1, ff_dim=256, dropout=0.0)
    layer.reset_attention()
    ref = torch.nn.MultiheadAttention(d, 1)  # PyTorch's own reset
    # in-projection: Xavier-uniform over (3d, d), bound sqrt(6 / 4d); out-projection:
    # Kaiming-uniform with a = sqrt(5), bound 1 / sqrt(d); biases zero
    for ours, theirs, bound in (
        (layer.qkv.weight, ref.in_proj_weight, math.sqrt(6 / (4 * d))),
        (layer.attn_out.weight, ref.out_proj.weight, 1 / math.sqrt(d)),
    ):
        assert ours.abs().max() <= bound
        assert theirs.abs().max() <= bound
        assert ours.std().item() == pytest.approx(theirs.std().item(), rel=0.02)
        assert ours.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # uniform
    assert torch.count_nonzero(layer.qkv.bias) == 0
    assert torch.count_nonzero(layer.attn_out.bias) == 0


def test_the_seed_model_uses_the_release_init_everywhere() -> None:
    m = model()
    assert m.sequence is not None
    attn = m.sequence.layers[0]
    assert isinstance(attn, EncoderLayer)
    d = attn.attn_out.weight.shape[0]
    # out-projection std 1/sqrt(3d), not Xavier-normal's sqrt(2 / 2d) = 1/sqrt(d)
    assert attn.attn_out.weight.std().item() == pytest.approx(1 / math.sqrt(3 * d), rel=0.05)
    ff = attn.ff_in.weight  # an ordinary Linear: Xavier-normal
    assert ff.std().item() == pytest.approx(math.sqrt(2 / sum(ff.shape)), rel=0.05)
    assert m.items.id_emb.weight[1:].std().item() == pytest.approx(1e-4, rel=0.05)


def test_train_step_loss_is_binary_cross_entropy_on_probabilities() -> None:
    m = model().double()
    history, target, context = batch()
    labels = (torch.arange(16) % 4 == 0).double()
    with torch.no_grad():
        expected = F.binary_cross_entropy(torch.sigmoid(m(history, target, context)), labels)
    from mmctr.data import Batch

    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss = train_step(m, opt, Batch(history, target, context, labels), TrainConfig())
    assert loss.dtype == torch.float64
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
