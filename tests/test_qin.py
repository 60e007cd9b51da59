"""QIN, the 2nd-place model: its two blocks by hand, padding, exact fast paths, sizes, and one
tiny run through training, evaluation, prediction, export, serving and ``describe``."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import left_padded_batch, model_config, with_loud_weights
from torch.utils.flop_counter import FlopCounterMode

import mmctr
from mmctr.cli.main import main
from mmctr.errors import ConfigError
from mmctr.model import PLAIN, QIN, DataDims, QINConfig, build_model, macs_per_sample
from mmctr.model import parameter_counts as counts_of
from mmctr.model.qin_layers import QuadraticLayer, QuadraticNetwork, ReLUTargetAttention

DIMS = DataDims(
    num_items=60, num_tags=12, tags_per_item=5, emb_dim=16, context_vocab_sizes=(11, 11)
)
TINY_FLAT: dict[str, object] = {
    "kind": "qin",
    "id_dim": 8,
    "tag_dim": 8,
    "mm_dim": 8,
    "context_dim": 4,
    "max_len": 20,
}
TINY_QIN = {"num_layers": 2, "num_rows": 3}
TINY_OVERRIDES = [
    "model.id_dim=8",
    "model.tag_dim=8",
    "model.mm_dim=8",
    "model.context_dim=4",
    "model.max_len=12",
    "model.qin.num_layers=2",
    "train.batch_size=256",
    "train.eval_batch_size=512",
    "train.epochs=1",
    "train.seed=7",
]


def qin(max_len: int = 20, **section: object) -> QIN:
    torch.manual_seed(0)
    cfg = model_config(**{**TINY_FLAT, "max_len": max_len}).replace_section(
        **{**TINY_QIN, **section}
    )
    return with_loud_weights(QIN(cfg, DIMS), DIMS)


def batch(lengths: list[int], seq_len: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return left_padded_batch(lengths, DIMS, seq_len)


def test_quadratic_layer_and_block_by_hand() -> None:
    layer = QuadraticLayer(dim=2, num_rows=2, dropout=0.0).double()
    with torch.no_grad():  # row 0: output columns 0-1, row 1: columns 2-3
        layer.rows.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, -1.0]]))
        layer.rows.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.5]))
    x = torch.tensor([[1.0, 2.0], [-1.0, 3.0], [1.0, -1.0]], dtype=torch.float64)
    # x = (1, 2): rows (1, 3) and (4, -1.5), sum (5, 1.5), times x: (5, 3)
    # x = (-1, 3): rows (-1, 4) and (1, -2.5), sum (0, 1.5): (0, 4.5)
    # x = (1, -1): rows (1, 0) and (1, 1.5), sum (2, 1.5): (2, -1.5)
    expected = torch.tensor([[5.0, 3.0], [0.0, 4.5], [2.0, -1.5]], dtype=torch.float64)
    assert torch.allclose(layer(x), expected, rtol=0, atol=1e-15)
    net = QuadraticNetwork(dim=2, num_layers=1, num_rows=2, dropout=0.0, batch_norm=False)
    net = net.double()
    inner = next(m for m in net.modules() if isinstance(m, QuadraticLayer))
    inner.load_state_dict(layer.state_dict())
    # x + PReLU(q) with PReLU's initial slope 0.25 on the one negative entry, -1.5
    block = torch.tensor([[6.0, 5.0], [-1.0, 7.5], [3.0, -1.375]], dtype=torch.float64)
    assert torch.allclose(net(x), block, rtol=0, atol=1e-15)


def test_relu_attention_by_hand_masks_padding() -> None:
    attention = ReLUTargetAttention(dim=2, attention_dim=2).double()
    with torch.no_grad():
        for linear in (attention.query, attention.key, attention.output):
            linear.weight.copy_(torch.eye(2))
        attention.value.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    target = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # scores t . h / sqrt(2): 2 / sqrt 2 = sqrt 2; -1 / sqrt 2 -> ReLU 0; the padding slot
    # (5, 5) would score 5 / sqrt 2 but is masked
    history = torch.tensor([[[5.0, 5.0], [2.0, 1.0], [-1.0, 3.0]]], dtype=torch.float64)
    real = torch.tensor([[False, True, True]])
    r2 = math.sqrt(2.0)
    weights = attention.weights(history, target, real)
    assert torch.allclose(weights, torch.tensor([[0.0, r2, 0.0]], dtype=torch.float64))
    # sqrt 2 * W_v (2, 1) = sqrt 2 * (2, 2), through W_o = I, plus the target (1, 0)
    expected = torch.tensor([[1.0 + 2.0 * r2, 2.0 * r2]], dtype=torch.float64)
    assert torch.allclose(attention(history, target, real), expected, rtol=0, atol=1e-14)
    packed = attention.forward_packed(history[real], target, real)
    assert torch.allclose(packed, expected, rtol=0, atol=1e-14)


def test_shapes_and_padding_change_no_score() -> None:
    model = qin()
    model.set_execution(PLAIN)
    history, target, context = batch([5, 9, 20, 0])
    base = model(history, target, context)
    assert base.shape == (4,) and torch.isfinite(base).all()
    longer = torch.nn.functional.pad(history, (7, 0))  # more left padding, a wider window
    assert torch.allclose(qin(max_len=27)(longer, target, context), base, atol=1e-6)
    model.items.item_emb[0] = 5.0  # what the padding row holds cannot matter
    with torch.no_grad():
        model.items.id_emb.weight[0] = 1.0
    assert torch.allclose(model(history, target, context), base, atol=1e-6)
    # a row without history pools to its target: the attention adds nothing
    real = history.ne(0)
    target_vec = model.items(target)
    interest = model.attention(model.items(history), target_vec, real)
    assert torch.equal(interest[3], target_vec[3])
    changed = history.clone()
    changed[0, -5] = (changed[0, -5] % 50) + 1  # the oldest real item of row 0
    assert not torch.allclose(model(changed, target, context)[0], base[0])


def test_trimmed_and_packed_paths_equal_the_plain_one_in_float64() -> None:
    model = qin().double()
    assert model.execution.trim_padding and model.execution.pack_tokens
    with pytest.raises(ValueError, match="no shared-history path"):
        model.set_execution(PLAIN.replace(share_histories=True))
    for lengths in ([3, 5, 8], [20, 1, 7], [0, 0, 2], [0, 0, 0]):
        history, target, context = batch(lengths)
        outputs, grads = [], []
        for execution in (model.execution, PLAIN, PLAIN.replace(trim_padding=True)):
            model.zero_grad()
            with model.executing(execution):
                out = model(history, target, context)
            out.square().sum().backward()
            outputs.append(out.detach())
            grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        for out, grad in zip(outputs[1:], grads[1:], strict=True):
            assert torch.allclose(out, outputs[0], rtol=1e-10, atol=1e-10), lengths
            pairs = zip(grad, grads[0], strict=True)
            assert all(torch.allclose(a, b, rtol=1e-9, atol=1e-12) for a, b in pairs), lengths


def test_parameters_by_hand_and_the_release_count() -> None:
    assert counts_of(qin()) == {
        "items": 704,  # ids 60 x 8 + tags 12 x 8 + Linear(16 -> 8, no bias); width 24
        "context": 88,  # 2 fields x 11 x 4
        "attention": 4_608,  # 4 bias-free 24 x 48
        "qnn": 19_378,  # 2 x (Linear(56 -> 3 x 56) 9,576 + BatchNorm 112 + PReLU 1)
        "output": 57,
        "total": 24_835,
    }
    challenge = DataDims(
        num_items=91_718,
        num_tags=11_740,
        tags_per_item=5,
        emb_dim=128,
        context_vocab_sizes=(11, 11),
    )
    with torch.device("meta"):
        release = build_model(mmctr.load_config("qin").model, challenge)
    assert counts_of(release)["total"] == 31_244_293  # the release's log of its 97.01 run


def test_multiply_adds_match_torch_flop_counter() -> None:
    model = qin()
    model.set_execution(PLAIN)
    history, target, context = batch([20, 20, 20])
    with FlopCounterMode(display=False) as counter:
        model(history, target, context)
    assert counter.get_total_flops() == 2 * 3 * macs_per_sample(model)["total"]


def test_a_one_row_training_batch_and_bad_keys() -> None:
    model = qin().train()
    history, target, context = batch([4])
    assert model(history, target, context).shape == (1,)
    assert all(m.training for m in model.modules())
    with pytest.raises(ConfigError, match=r"model\.qin\.num_rows must be >= 1"):
        mmctr.load_config("qin-cpu", ["model.qin.num_rows=0"])
    with pytest.raises(ConfigError, match=r"model\.qin\.dropout must be in"):
        mmctr.load_config("qin-cpu", ["model.qin.dropout=1.0"])
    assert mmctr.load_config("qin").model.section(QINConfig) == QINConfig()


def test_trains_scores_predicts_exports_serves_and_describes(
    tiny_data_master: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from mmctr.export import export_run
    from mmctr.serve.app import build_app
    from mmctr.serve.settings import ServeSettings, load_served

    data, run = str(tiny_data_master), tmp_path / "run"
    summary = mmctr.train(data, "qin-cpu", run, overrides=TINY_OVERRIDES, log=lambda _: None)
    scorer = mmctr.load_run(run, data, device="cpu")
    assert isinstance(scorer.model, QIN)
    valid = scorer.evaluate("valid")
    assert np.isfinite(valid["auc"]) and valid["auc"] == pytest.approx(summary.best_valid.auc)
    out = tmp_path / "submission.zip"
    assert main(["predict", "--run", str(run), "--data", data, "--out", str(out)]) == 0
    with zipfile.ZipFile(out) as archive:
        assert len(archive.namelist()) == 1
    info = export_run(run, data, "torchscript", tmp_path / "qin.pt")
    assert info["max_abs_diff_check"] < 1e-5, info
    assert info["interface"]["model_kind"] == "qin"
    expected = scorer.score([[3, 1, 4]] * 2, [9, 2], [[3, 1]] * 2)
    app = build_app(load_served(ServeSettings(run=str(run), data=data, threads=1)))
    with TestClient(app) as client:
        body = {"history": [3, 1, 4], "context": {"likes_level": 3, "views_level": 1}}
        answer = client.post("/v1/score", json={**body, "candidates": [9, 2]})
    assert answer.status_code == 200, answer.text
    assert np.allclose(answer.json()["scores"], expected, atol=1e-6)
    capsys.readouterr()
    assert main(["describe", "--config", "qin-cpu", "--data", data]) == 0
    described = capsys.readouterr().out
    assert "qnn" in described and "attention" in described, described
