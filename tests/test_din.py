"""The DIN baseline: sizes by hand, its mask, exact fast paths, and the shared training code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import left_padded_batch, model_config, with_loud_weights
from torch.utils.flop_counter import FlopCounterMode

from mmctr.config import Config, load_config
from mmctr.data import load_dataset
from mmctr.model import (
    DIN,
    PLAIN,
    DataDims,
    DINConfig,
    build_model,
    macs_per_sample,
    parameter_counts,
)
from mmctr.training import checkpoint as ckpt
from mmctr.training import inference, loop, run

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DIMS = DataDims(
    num_items=60, num_tags=12, tags_per_item=5, emb_dim=16, context_vocab_sizes=(11, 11)
)
TINY_FLAT: dict[str, object] = {
    "kind": "din",
    "id_dim": 8,
    "tag_dim": 8,
    "mm_dim": 8,
    "context_dim": 4,
    "max_len": 20,
    "din_attention_mlp": (16,),
    "din_mlp": (32,),
}
TINY = model_config(**TINY_FLAT)
TINY_DIN_OVERRIDES = [
    "model.id_dim=8",
    "model.tag_dim=8",
    "model.mm_dim=8",
    "model.context_dim=4",
    "model.max_len=12",
    "model.din.attention_mlp=16,8",
    "model.din.mlp=32,16",
    "train.batch_size=256",
    "train.eval_batch_size=512",
    "train.epochs=1",
    "train.seed=7",
]


PATHS = ("trim_padding", "pack_tokens")  # execution, not config: set on the built model


def din(**changes: object) -> DIN:
    torch.manual_seed(0)
    paths = {key: bool(changes.pop(key)) for key in PATHS if key in changes}
    model = DIN(model_config(**{**TINY_FLAT, **changes}), DIMS)
    model.set_execution(model.execution.replace(**paths))
    return with_loud_weights(model, DIMS)


def batch(lengths: list[int], seq_len: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return left_padded_batch(lengths, DIMS, seq_len)


def test_factory_builds_din_and_the_preset_is_the_baseline() -> None:
    assert isinstance(build_model(TINY, DIMS), DIN)
    cfg = load_config(CONFIGS / "din.toml")
    m, t = cfg.model, cfg.train
    assert m.kind == "din" and (m.id_dim, m.tag_dim, m.context_dim, m.max_len) == (64, 64, 64, 64)
    assert m.section(DINConfig).batch_norm and not m.section(DINConfig).softmax
    assert (t.lr, t.batch_size, t.patience) == (1e-3, 8192, 3)


def test_parameter_count_by_hand() -> None:
    counts = parameter_counts(DIN(TINY, DIMS))
    # items: ids 60 x 8 + tags 12 x 8 + Linear(16 -> 8, no bias) = 704; item width 24
    # context: 2 fields x 11 x 4 = 88
    # attention: Linear(4 x 24 -> 16) 1,552 + Linear(16 -> 1) 17 = 1,569
    # head: Linear(4 x 2 + 2 x 24 -> 32) 1,824 + BatchNorm(32) 64 + Linear(32 -> 1) 33 = 1,921
    assert counts == {
        "items": 704,
        "context": 88,
        "attention": 1_569,
        "head": 1_921,
        "total": 4_282,
    }


def test_shape_and_finite_for_every_switch() -> None:
    history, target, context = batch([3, 20, 0])
    for changes in ({}, {"use_multimodal": False}, {"din_softmax": True}, {"din_mlp": ()}):
        out = din(**changes)(history, target, context)
        assert out.shape == (3,) and torch.isfinite(out).all(), changes


def test_padding_is_invisible_and_gets_zero_weight() -> None:
    for softmax in (False, True):
        model = din(trim_padding=False, pack_tokens=False, din_softmax=softmax)
        history, target, context = batch([5, 9, 20])
        base = model(history, target, context)
        real = history.ne(0)
        weights = model.attention.weights(model.items(history), model.items(target), real)
        assert torch.equal(weights[~real], torch.zeros_like(weights[~real]))
        if softmax:
            assert torch.allclose(weights.sum(1), torch.ones(3))
        # what the padding row of the item table holds cannot matter
        model.items.item_emb[0] = 5.0
        model.items.item_tags[0] = 3
        with torch.no_grad():
            model.items.id_emb.weight[0] = 1.0
        assert torch.allclose(model(history, target, context), base, atol=1e-6)
        # more leading padding changes nothing either
        longer = torch.nn.functional.pad(history, (7, 0))
        assert torch.allclose(din(max_len=27, din_softmax=softmax)(longer, target, context), base)
        changed = history.clone()
        changed[0, -5] = (changed[0, -5] % 50) + 1  # the oldest real item of row 0
        assert not torch.allclose(model(changed, target, context)[0], base[0])


def test_trimmed_and_packed_paths_are_exact() -> None:
    model = din().double()  # trimming and packing: its own execution
    assert model.execution.trim_padding and model.execution.pack_tokens
    for lengths in ([3, 5, 8], [20, 1, 7], [0, 0, 2], [0, 0, 0]):
        history, target, context = batch(lengths)
        a = model(history, target, context)
        with model.executing(PLAIN):
            b = model(history, target, context)
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10), lengths


def test_multiply_adds_match_torch_flop_counter() -> None:
    model = din(trim_padding=False, pack_tokens=False)
    history, target, context = batch([20, 20, 20])
    with FlopCounterMode(display=False) as counter:
        model(history, target, context)
    assert counter.get_total_flops() == 2 * 3 * macs_per_sample(model)["total"]


def test_a_one_row_training_batch_does_not_fail() -> None:
    model = din().train()
    history, target, context = batch([4])
    assert model(history, target, context).shape == (1,)
    assert all(m.training for m in model.modules())


def test_trains_through_fit_and_reloads_to_the_same_predictions(
    tiny_data_master: Path, tmp_path: Path
) -> None:
    config = load_config(CONFIGS / "din.toml", TINY_DIN_OVERRIDES)
    config = Config(data=Config().data, model=config.model, train=config.train)
    data = load_dataset(tiny_data_master, config.data, ("train", "valid"))
    model = run.new_model(config, data.schema, data.items)
    out = ckpt.RunDir(tmp_path / "run")
    result = loop.fit(model, data, config, out, progress=False, log=lambda _: None)
    assert result.epochs_run == 1 and np.isfinite(result.best_valid.auc)
    expected = inference.predict_probs(model, data["valid"], 512)
    trained = ckpt.load_trained(tmp_path / "run")
    assert isinstance(trained.model, DIN)
    inference.attach_items(trained.model, data.items)
    probs = inference.predict_probs(trained.model, data["valid"], 97)
    assert np.allclose(probs, expected, atol=1e-6)
    assert inference.evaluate(trained.model, data["valid"], 512) == pytest.approx(
        result.best_valid.to_dict()
    )
