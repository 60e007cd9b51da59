"""The seed model: exact size, masking semantics, hand-checked layers, exact trimming."""

from __future__ import annotations

import copy

import pytest
import torch
from model_helpers import left_padded_batch, model_config, with_loud_weights
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from mmctr.config import Config
from mmctr.model import (
    PLAIN,
    DataDims,
    Execution,
    ModelConfig,
    SeedCTR,
    TargetTransformerConfig,
    macs_per_sample,
    parameter_counts,
)
from mmctr.model.base import CTRModel
from mmctr.model.layers import MLP, CrossNetwork
from mmctr.model.packing import bucket_widths, plan_layout
from mmctr.model.sequence import trim_history

CHALLENGE = DataDims(
    num_items=91_718, num_tags=11_740, tags_per_item=5, emb_dim=128, context_vocab_sizes=(11, 11)
)
SMALL_DIMS = DataDims(
    num_items=60, num_tags=12, tags_per_item=5, emb_dim=16, context_vocab_sizes=(11, 11)
)
SMALL_FLAT: dict[str, object] = {
    "id_dim": 8,
    "tag_dim": 8,
    "mm_dim": 8,
    "context_dim": 4,
    "max_len": 20,
    "first_k": 4,
    "ff_dim": 16,
    "deep_mlp": (32, 16),
    "pred_mlp": (16,),
}
SMALL = model_config(**SMALL_FLAT)
PATHS = ("trim_padding", "pack_tokens")  # execution, not config: set on the built model


def small_model(**changes: object) -> SeedCTR:
    torch.manual_seed(0)
    paths = {key: bool(changes.pop(key)) for key in PATHS if key in changes}
    model = SeedCTR(model_config(**{**SMALL_FLAT, **changes}), SMALL_DIMS)
    model.set_execution(model.execution.replace(**paths))
    return with_loud_weights(model, SMALL_DIMS)


def batch(lengths: list[int], seq_len: int = 20) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return left_padded_batch(lengths, SMALL_DIMS, seq_len)


def test_paper_config_has_the_papers_parameter_count() -> None:
    with torch.device("meta"):
        model = SeedCTR(Config().model, CHALLENGE)
    counts = parameter_counts(model)
    assert counts["total"] == 267_898_881
    assert counts["cross"] == 247_802_496  # 3 x (9088 x 9088 + 9088)
    assert model.x0_dim == 9_088


def test_paper_config_multiply_adds() -> None:
    with torch.device("meta"):
        model = SeedCTR(Config().model, CHALLENGE)
    macs = macs_per_sample(model)
    assert macs["cross"] == 3 * 9_088 * 9_088
    assert 0.28e9 < macs["sequence"] < 0.29e9  # 2 layers x 100 tokens at d_model 512
    assert 0.53e9 < macs["total"] < 0.55e9


@pytest.mark.parametrize("changes", [{}, {"target_concat": False}, {"use_sequence": False}])
def test_multiply_adds_match_torch_flop_counter(changes: dict[str, object]) -> None:
    model = small_model(trim_padding=False, **changes)
    history, target, context = batch([20, 20, 20])
    # the math kernel runs attention as bmm, which the counter sees; fused CPU kernels it does not
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(history, target, context)
    assert counter.get_total_flops() == 2 * 3 * macs_per_sample(model)["total"]


@pytest.mark.parametrize("pack", [False, True])
def test_correct_mask_ignores_padding_and_sees_history(pack: bool) -> None:
    model = small_model(trim_padding=False, pack_tokens=pack)
    history, target, context = batch([5, 9, 20])
    base = model(history, target, context)
    changed_pad = history.clone()
    changed_pad[1, :11] = 0  # already padding: rewriting zeros keeps zeros
    assert torch.equal(model(changed_pad, target, context), base)
    # a padding slot whose item changes is no longer padding; instead check padding *content*
    # cannot matter: the item table row 0 may hold anything and the output stays the same
    model.items.item_emb[0] = 5.0
    model.items.item_tags[0] = 3
    with torch.no_grad():
        model.items.id_emb.weight[0] = 1.0
    assert torch.allclose(model(history, target, context), base, atol=1e-6)
    real = history.clone()
    real[0, -2] = (real[0, -2] % 50) + 1
    assert not torch.allclose(model(real, target, context)[0], base[0])
    early = history.clone()
    early[2, 0] = (early[2, 0] % 50) + 1  # oldest item of a full history, outside the last k
    assert not torch.allclose(model(early, target, context)[2], base[2])


def test_released_mask_is_blind_to_the_real_items_of_short_histories() -> None:
    model = small_model(mask="released")
    history, target, context = batch([5, 9, 20])
    base = model(history, target, context)
    changed = history.clone()
    changed[0, -1] = (changed[0, -1] % 50) + 1
    changed[1, -4] = (changed[1, -4] % 50) + 1
    assert torch.allclose(model(changed, target, context)[:2], base[:2])
    other = target.clone()
    other[0] = (other[0] % 50) + 1
    assert not torch.allclose(model(history, other, context)[0], base[0])
    # a full history has one position left unmasked (the release's adjust_mask): not blind
    full = history.clone()
    full[2, -1] = (full[2, -1] % 50) + 1
    assert not torch.allclose(model(full, target, context)[2], base[2])


BEYOND = {"similarity_input": True, "positions": True, "semantic_ids": True, "sid_codes": 4}


@pytest.mark.parametrize(
    ("trim", "pack", "extra"),
    [(True, False, {}), (False, True, {}), (True, True, {}), (True, True, BEYOND)],
    ids=["trim", "pack", "both", "both-beyond"],
)
def test_fast_paths_are_exact_under_the_correct_mask(
    trim: bool, pack: bool, extra: dict[str, object]
) -> None:
    # float64, so that the only possible difference is a real one, not summation order
    fast = small_model(**extra).double()
    plain = copy.deepcopy(fast)  # the same weights, computed the plain way
    fast.set_execution(Execution(trim_padding=trim, pack_tokens=pack))
    plain.set_execution(PLAIN)
    mixed = [2, 2, 2, 5, 6, 6, 0, 20, 13, 1, 12, 3, 9, 9, 17]  # dense and padded buckets
    for lengths in ([3, 5, 8], [20, 1, 7], [3, 2, 1], [0, 4, 2], [0, 0], mixed, mixed[:-1]):
        history, target, context = batch(lengths)
        if len(lengths) == len(mixed) - 1:
            history[7, 2] = history[8, -3] = 0  # holes inside histories, one in the last k
        out_fast, out_plain = fast(history, target, context), plain(history, target, context)
        assert torch.allclose(out_fast, out_plain, rtol=1e-10, atol=1e-10), lengths
        out_fast.sum().backward()
        out_plain.sum().backward()
        for (name, p_fast), p_plain in zip(
            fast.named_parameters(), plain.parameters(), strict=True
        ):
            g_fast = p_fast.grad if p_fast.grad is not None else torch.zeros_like(p_fast)
            g_plain = p_plain.grad if p_plain.grad is not None else torch.zeros_like(p_plain)
            # relative to the largest entry: loud weights give gradients of 1e4 beside zeros
            gap = (g_fast - g_plain).abs().max()
            assert gap <= 1e-10 + 1e-10 * g_plain.abs().max(), (lengths, name)
        fast.zero_grad()
        plain.zero_grad()


def test_bucket_widths_pad_each_length_by_at_most_half() -> None:
    assert bucket_widths(20) == [1, 2, 3, 4, 6, 8, 12, 16, 20]
    assert bucket_widths(1) == [1]
    for n in range(1, 101):
        assert n <= min(w for w in bucket_widths(100) if w >= n) <= max(1.5 * n, 2)


def test_packed_layout_puts_every_real_item_in_its_own_slot() -> None:
    history, _, _ = batch([2, 2, 5, 6, 0, 20, 13, 1, 12])
    history[5, 7] = 0  # a hole inside a history is still exact
    real = history.ne(0)
    layout = plan_layout(real, first_k=4)
    assert sorted(layout.order.tolist()) == list(range(int(real.sum())))
    rows = real.nonzero()[:, 0][layout.order]
    assert torch.equal(rows, layout.row)
    for b in layout.buckets:
        lengths = real[layout.row[b.start : b.end].unique()].sum(1)
        assert int(lengths.max()) == b.width
        if b.slots is None:
            assert bool((lengths == b.width).all())
        else:
            assert b.slots.unique().numel() == b.end - b.start
            assert b.attend is not None and int(b.attend.sum()) == b.end - b.start
    assert sum(b.end - b.start for b in layout.buckets) == int(real.sum())


def test_trim_history_keeps_at_least_first_k() -> None:
    history, _, _ = batch([3, 5, 8])
    assert trim_history(history, 4).shape[1] == 8
    assert trim_history(history[:, :0], 4).shape[1] == 0
    assert trim_history(batch([3, 2, 1])[0], 4).shape[1] == 4


def test_empty_histories_give_finite_outputs() -> None:
    for mask in ("correct", "released"):
        model = small_model(mask=mask)
        history, target, context = batch([0, 0])
        assert torch.isfinite(model(history, target, context)).all()


def test_low_rank_cross_network_is_the_full_one_with_w_equal_uv() -> None:
    torch.manual_seed(0)
    low = CrossNetwork(dim=6, num_layers=2, rank=2)
    full = CrossNetwork(dim=6, num_layers=2)
    with torch.no_grad():
        for lo, fu in zip(low.layers, full.layers, strict=True):
            assert isinstance(lo, torch.nn.Sequential) and isinstance(fu, torch.nn.Linear)
            fu.weight.copy_(lo[1].weight @ lo[0].weight)
            fu.bias.copy_(lo[1].bias)
    x0 = torch.randn(4, 6)
    assert torch.allclose(low(x0), full(x0), atol=1e-6)
    assert sum(p.numel() for p in low.parameters()) == 2 * (2 * 6 * 2 + 6)
    model = small_model(cross_rank=3)
    assert macs_per_sample(model)["cross"] == 3 * 2 * 3 * model.x0_dim


def test_cross_network_by_hand() -> None:
    cross = CrossNetwork(dim=2, num_layers=2)
    with torch.no_grad():
        for layer in cross.layers:
            layer.weight.fill_(1.0)
            layer.bias.fill_(0.5)
    # x1 = x0 * (W x0 + b) + x0 = [1, 2] * 3.5 + [1, 2] = [4.5, 9]
    # x2 = x0 * (W x1 + b) + x1 = [1, 2] * 14 + [4.5, 9] = [18.5, 37]
    out = cross(torch.tensor([[1.0, 2.0]]))
    assert torch.equal(out, torch.tensor([[18.5, 37.0]]))


def test_layers_reject_bad_sizes() -> None:
    with pytest.raises(ValueError, match="num_layers >= 1"):
        CrossNetwork(dim=4, num_layers=0)
    with pytest.raises(ValueError, match="at least one hidden size"):
        MLP(in_dim=4, hidden=())


@pytest.mark.parametrize(
    "changes",
    [
        {"use_sequence": False},
        {"use_cross": False},
        {"use_multimodal": False},
        {"target_concat": False},
        {"mm_projection": "none"},
        {"max_pool": False},
        {"first_k": 1},
        {"use_sequence": False, "use_multimodal": False},
        {"semantic_ids": True, "sid_levels": 2, "sid_codes": 8},
        {"id_init": "mm"},
        {"similarity_input": True},
        {"positions": True},
        {**BEYOND, "id_init": "mm", "use_multimodal": False},
    ],
)
def test_variants_run_and_shape(changes: dict[str, object]) -> None:
    model = small_model(**changes)
    history, target, context = batch([3, 20])
    out = model(history, target, context)
    assert out.shape == (2,) and torch.isfinite(out).all()


def test_item_features_must_fit() -> None:
    model = small_model()
    with pytest.raises(ValueError, match="do not fit"):
        model.items.load_item_features(torch.zeros(5, 5, dtype=torch.long), torch.zeros(5, 16))


def test_padding_item_embeds_to_zero() -> None:
    model = small_model()
    assert torch.equal(model.items(torch.tensor([0])), torch.zeros(1, model.items.out_dim))


def test_factory_builds_the_seed_model_unless_din_is_asked_for() -> None:
    from mmctr.model import DIN, build_model

    assert type(build_model(SMALL, SMALL_DIMS)) is SeedCTR
    din = model_config(**{**SMALL_FLAT, "kind": "din", "max_len": 2})  # first_k is not DIN's
    assert type(build_model(din, SMALL_DIMS)) is DIN
    with pytest.raises(ValueError, match=r"takes \[model.din\] keys"):
        ModelConfig(kind="din", kind_section=TargetTransformerConfig(mask="released"))


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"pack_tokens": False},
        {"trim_padding": False, "pack_tokens": False},
        {"target_concat": False},
        {"target_concat": False, "pack_tokens": False},
        {"use_sequence": False},
        {"mask": "released"},
        {"semantic_ids": True, "sid_codes": 4},
        {"similarity_input": True},
        {"positions": True, "pack_tokens": False},
    ],
    ids=[
        "packed",
        "dense",
        "untrimmed",
        "no-concat",
        "no-concat-dense",
        "no-sequence",
        "released",
        "semantic-ids",
        "similarity",
        "positions",
    ],
)
def test_grouped_scoring_equals_scoring_repeated_rows(changes: dict[str, object]) -> None:
    # float64: sharing a history's work among its candidates changes nothing but rounding
    model = small_model(**changes).double()
    history, _, context = batch([20, 0, 7, 3, 12])
    history[2, -3] = 0  # a hole inside a history
    g = torch.Generator().manual_seed(3)
    group = torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4, 0])  # unsorted, one group repeated
    target = torch.randint(1, SMALL_DIMS.num_items, (len(group),), generator=g)
    with torch.no_grad():
        grouped = model.forward_groups(history, group, target, context)
        plain = model(history[group], target, context[group])
    assert grouped.shape == (len(group),)
    assert torch.allclose(grouped, plain, rtol=1e-12, atol=1e-12)
    # and the base class's generic version agrees for models that share nothing
    with torch.no_grad():
        generic = CTRModel.forward_groups(model, history, group, target, context)
    assert torch.allclose(generic, plain, rtol=1e-12, atol=1e-12)
