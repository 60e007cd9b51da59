"""Execution is the model's own state: every path a model offers gives the plain path's scores
in float64, a path it cannot honour is refused with a message, and switching never touches the
frozen config."""

from __future__ import annotations

import copy

import pytest
import torch
from model_helpers import left_padded_batch, model_config, with_loud_weights

from mmctr.model import PLAIN, DataDims, Execution, build_model
from mmctr.training.precision import for_inference

DIMS = DataDims(num_items=40, num_tags=9, tags_per_item=3, emb_dim=6, context_vocab_sizes=(11, 11))
SMALL = dict(
    id_dim=4, tag_dim=4, mm_dim=4, context_dim=2, max_len=12, first_k=3, ff_dim=8,
    deep_mlp=(8,), pred_mlp=(4,), seq_dropout=0.0, deep_dropout=0.0,
)  # fmt: skip
EVERY = [
    Execution(trim_padding=t, pack_tokens=p, share_histories=s)
    for t in (False, True)
    for p in (False, True)
    for s in (False, True)
]


def _model(**changes: object) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(model_config(**{**SMALL, **changes}), DIMS).double()
    return with_loud_weights(model, DIMS)


def _grouped_inputs() -> tuple[torch.Tensor, ...]:
    history, _, context = left_padded_batch([0, 2, 7, 12], DIMS, seq_len=16)
    group = torch.tensor([0, 1, 1, 2, 3, 3, 3])
    targets = torch.randint(1, DIMS.num_items, (7,), generator=torch.Generator().manual_seed(3))
    return history, group, targets, context


@pytest.mark.parametrize(
    ("changes", "paths"),
    [
        ({}, 8),
        ({"mask": "released"}, 2),
        ({"similarity_input": True}, 4),
        ({"positions": True}, 4),
        ({"semantic_ids": True, "sid_codes": 4, "id_init": "mm"}, 8),
        ({"kind": "din"}, 4),
    ],
)
def test_every_offered_path_scores_as_the_plain_one(changes: dict[str, object], paths: int) -> None:
    model = _model(**changes)
    config_before = model.cfg
    history, group, targets, context = _grouped_inputs()
    with torch.no_grad(), model.executing(PLAIN):
        plain = model(history[group], targets, context[group])
    offered = 0
    for execution in EVERY:
        try:
            model.check_execution(execution)
        except ValueError:
            continue
        offered += 1
        with torch.no_grad(), model.executing(execution):
            rows = model(history[group], targets, context[group])
            grouped = model.forward_groups(history, group, targets, context)
        assert torch.allclose(rows, plain, atol=1e-12), execution
        assert torch.allclose(grouped, plain, atol=1e-12), execution
    assert offered == paths
    assert model.cfg is config_before  # switching paths never replaces the config


@pytest.mark.parametrize(
    ("changes", "execution", "message"),
    [
        ({"mask": "released"}, Execution(pack_tokens=True), "pack_tokens is not exact"),
        ({"mask": "released"}, Execution(trim_padding=True), "trim_padding is not exact"),
        ({"similarity_input": True}, Execution(share_histories=True), "similarity or position"),
        ({"positions": True}, Execution(share_histories=True), "similarity or position"),
        ({"kind": "din"}, Execution(share_histories=True), "DIN has no shared-history path"),
    ],
)
def test_a_path_the_model_cannot_honour_is_refused(
    changes: dict[str, object], execution: Execution, message: str
) -> None:
    model = _model(**changes)
    with pytest.raises(ValueError, match=message):
        model.set_execution(execution)
    with pytest.raises(ValueError, match=message), model.executing(execution):
        pass  # never reached: the context refuses before the block


def test_each_model_starts_on_its_fastest_exact_path() -> None:
    assert _model().execution == Execution(True, True, True)
    assert _model(mask="released").execution == Execution(False, False, True)
    assert _model(similarity_input=True).execution == Execution(True, True, False)
    assert _model(kind="din").execution == Execution(True, True, False)


def test_full_window_reads_every_position_and_restores_the_path() -> None:
    model = _model()
    history = torch.zeros(2, 16, dtype=torch.long)
    history[:, -2:] = 5  # 14 all-padding columns, which trimming drops
    assert model.window(history).shape[1] == 3  # trimmed down to first_k
    with model.full_window():
        assert model.window(history).shape[1] == 12  # max_len
    assert model.execution == Execution(True, True, True)


def test_an_int8_model_scores_rows_one_by_one_and_refuses_to_share() -> None:
    model = for_inference(copy.deepcopy(_model()).float(), "int8")
    assert not model.execution.share_histories
    history, group, targets, context = _grouped_inputs()
    with torch.no_grad():
        grouped = model.forward_groups(history, group, targets, context)
        rows = model(history[group], targets, context[group])
    assert torch.allclose(grouped, rows)
    model.execution = model.execution.replace(share_histories=True)  # bypassing the check
    with pytest.raises(ValueError, match="quantised"), torch.no_grad():
        model.forward_groups(history, group, targets, context)
