"""New items: scored from their tags and frozen embedding, with the zero id row."""

from __future__ import annotations

import torch
from model_helpers import left_padded_batch, model_config, with_loud_weights

from mmctr.model import DataDims, SeedCTR

DIMS = DataDims(
    num_items=50, num_tags=20, tags_per_item=3, emb_dim=12, context_vocab_sizes=(11, 11)
)
CFG = model_config(id_dim=4, tag_dim=4, mm_dim=4, context_dim=2, max_len=20, first_k=3,
                   ff_dim=8, deep_mlp=(16,), pred_mlp=(8,))  # fmt: skip


def model() -> SeedCTR:
    torch.manual_seed(0)
    return with_loud_weights(SeedCTR(CFG, DIMS), DIMS)


def test_a_new_item_is_its_tags_and_embedding_with_a_zero_id() -> None:
    m = model()
    ids = torch.tensor([3, 7])
    before = m.items(ids)
    m.items.mark_new_items(torch.tensor([7]))
    after = m.items(ids)
    id_part = slice(0, CFG.id_dim)
    assert torch.equal(after[0], before[0]), "other items are untouched"
    assert torch.equal(after[1, id_part], torch.zeros(CFG.id_dim))
    assert torch.equal(after[1, CFG.id_dim :], before[1, CFG.id_dim :])


def test_items_beyond_the_trained_table_score_with_the_zero_id_row() -> None:
    m = model()
    history, target, context = left_padded_batch([5, 9, 2], DIMS)
    known = m(history, target, context)
    tags, emb = m.items.item_tags.clone(), m.items.item_emb.clone()
    # register two new items that copy item 4's features: ids 50 and 51
    grown_tags = torch.cat([tags, tags[4:5].repeat(2, 1)])
    grown_emb = torch.cat([emb, emb[4:5].repeat(2, 1)])
    m.items.load_item_features(grown_tags, grown_emb)
    assert torch.equal(m(history, target, context), known), "known items score as before"
    new_target = torch.full_like(target, 50)
    m.items.mark_new_items(torch.tensor([4]))  # item 4 without its id == the new copies
    assert torch.allclose(m(history, new_target, context), m(history, torch.full_like(target, 4),
                                                             context))  # fmt: skip
