"""Beyond the paper (docs/beyond.md): semantic IDs, multimodal id init, similarity and
positions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from model_helpers import left_padded_batch, model_config
from test_model import SMALL_DIMS, SMALL_FLAT, small_model
from test_training import stable

from mmctr.config import Config
from mmctr.config.model import BeyondConfig
from mmctr.model import ModelConfig, SeedCTR, TargetTransformerConfig, fit_items
from mmctr.model.semantic import (
    assign_codes,
    fit_residual_codebooks,
    kmeans,
    principal_init,
)

ALL = {
    "beyond.semantic_ids": "true",
    "beyond.sid_codes": "8",
    "beyond.id_init": "mm",
    "target_transformer.similarity_input": "true",
    "target_transformer.positions": "true",
}


def planted(n_per: int = 30, clusters: int = 4, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows near ``clusters`` orthogonal directions; returns (rows, cluster of each row)."""
    g = torch.Generator().manual_seed(5)
    centres = torch.eye(dim)[:clusters] * 3
    label = torch.arange(clusters).repeat_interleave(n_per)
    rows = centres[label] + 0.1 * torch.randn(len(label), dim, generator=g)
    return rows, label


def test_kmeans_finds_planted_clusters() -> None:
    rows, label = planted()
    # up to the names of the codes, the level-1 codes are the planted clusters
    books = fit_residual_codebooks(rows, 2, 4, torch.Generator().manual_seed(0))
    codes = assign_codes(rows, books)
    pairs = set(zip(label.tolist(), codes[:, 0].tolist(), strict=True))
    assert len(pairs) == 4 and len({c for _, c in pairs}) == 4
    # the second level describes what the first leaves: the residual shrinks
    unit = torch.nn.functional.normalize(rows, dim=-1)
    after_one = unit - books[0][codes[:, 0]]
    after_two = after_one - books[1][codes[:, 1]]
    assert after_two.norm(dim=1).mean() < after_one.norm(dim=1).mean() < 0.2


def test_kmeans_with_fewer_rows_than_codes_still_gives_k_centroids() -> None:
    rows, _ = planted(n_per=1)
    centroids = kmeans(rows, 6, torch.Generator().manual_seed(0))
    assert centroids.shape == (6, 16) and torch.isfinite(centroids).all()


def test_principal_init_has_the_asked_scale_and_the_main_direction() -> None:
    rows, label = planted(clusters=2)
    init = principal_init(rows, 8, 1e-4)
    assert init.shape == (60, 8)
    assert init[:, :].std().item() == pytest.approx(1e-4, rel=1e-3)
    # the first component separates the two planted clusters by sign
    signs = torch.sign(init[:, 0])
    assert (signs[label == 0] == signs[label == 0][0]).all()
    assert (signs[label == 1] == -signs[label == 0][0]).all()
    # wider than the embedding: the extra components are zero
    assert torch.equal(principal_init(rows[:, :4], 6, 1e-4)[:, 4:], torch.zeros(60, 2))


def _features(n: int = SMALL_DIMS.num_items) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tags = torch.randint(0, SMALL_DIMS.num_tags, (n, SMALL_DIMS.tags_per_item), generator=g)
    emb = torch.randn(n, SMALL_DIMS.emb_dim, generator=g)
    tags[0], emb[0] = 0, 0.0
    return tags, emb


def test_fitted_once_and_kept_with_the_weights() -> None:
    cfg = model_config(**{**SMALL_FLAT, "semantic_ids": True, "sid_codes": 4, "id_init": "mm"})
    torch.manual_seed(0)
    model = SeedCTR(cfg, SMALL_DIMS)
    assert not bool(model.items.fitted)
    tags, emb = _features()
    model.items.load_item_features(tags, emb)
    assert not bool(model.items.fitted)  # loading a table fits nothing: fit_items does
    assert fit_items(model.items, seed=0)
    assert bool(model.items.fitted)
    # the id table starts at the frozen embedding's principal components, padding row zero
    table = model.items.id_emb.weight.detach()
    assert torch.equal(table[0], torch.zeros(cfg.id_dim))
    assert torch.allclose(table[1:], principal_init(emb[1:], cfg.id_dim, 1e-4), atol=1e-9)
    # a trained model loaded elsewhere keeps its codebooks and its ids: nothing is refitted
    with torch.no_grad():
        model.items.id_emb.weight.add_(1.0)
    torch.manual_seed(123)  # another init, which loading the weights replaces
    twin = SeedCTR(cfg, SMALL_DIMS)
    twin.load_state_dict(model.state_dict())
    twin.items.load_item_features(tags, emb)
    assert torch.equal(twin.items.sid_books, model.items.sid_books)
    assert torch.equal(twin.items.id_emb.weight, model.items.id_emb.weight)
    assert torch.equal(twin.items.sid_codes, model.items.sid_codes)
    # new items (a larger table) get codes from the kept codebooks
    more_tags, more_emb = _features(SMALL_DIMS.num_items + 5)
    more_emb[-5:] = emb[1:6]  # copies of known items
    twin.items.load_item_features(more_tags, more_emb)
    assert torch.equal(twin.items.sid_codes[-5:], model.items.sid_codes[1:6])


def test_codes_follow_loaded_codebooks() -> None:
    cfg = model_config(**{**SMALL_FLAT, "semantic_ids": True, "sid_codes": 4})
    tags, emb = _features()
    torch.manual_seed(0)
    a = SeedCTR(cfg, SMALL_DIMS)
    a.items.load_item_features(tags, emb)
    fit_items(a.items, seed=0)
    torch.manual_seed(7)
    b = SeedCTR(cfg, SMALL_DIMS)
    b.items.load_item_features(tags, emb)
    fit_items(b.items, seed=7)  # fits its own codebooks
    assert not torch.equal(b.items.sid_books, a.items.sid_books)
    b.load_state_dict(a.state_dict())  # then takes a's: the codes must follow
    assert torch.equal(b.items.sid_codes, a.items.sid_codes)


def test_similarity_is_the_cosine_of_the_frozen_embeddings() -> None:
    model = small_model()
    emb = model.items.item_emb
    ids, other = torch.tensor([[3, 0], [5, 5]]), torch.tensor([[4, 4], [5, 9]])
    sim = model.items.similarity(ids, other)
    by_hand = torch.nn.functional.cosine_similarity(emb[3], emb[4], dim=0)
    assert sim[0, 0].item() == pytest.approx(by_hand.item(), abs=1e-6)
    assert sim[0, 1].item() == 0.0  # padding has no embedding
    assert sim[1, 0].item() == pytest.approx(1.0, abs=1e-6)


def test_similarity_input_reads_the_target_history_similarity() -> None:
    # the same item vectors, other frozen-embedding similarities: only the switch sees it
    history, target, context = left_padded_batch([6, 9], SMALL_DIMS)
    for switch in (False, True):
        model = small_model(similarity_input=switch, use_multimodal=False)
        base = model(history, target, context)
        with torch.no_grad():
            model.items.item_emb[target] = -model.items.item_emb[target]  # flips every cosine
        changed = not torch.allclose(model(history, target, context), base)
        assert changed == switch


def test_positions_make_the_order_of_older_items_count() -> None:
    history, target, context = left_padded_batch([12, 15], SMALL_DIMS)
    swapped = history.clone()
    swapped[:, [-8, -10]] = history[:, [-10, -8]]  # both outside the last first_k = 4
    for switch in (False, True):
        model = small_model(positions=switch)
        before, after = model(history, target, context), model(swapped, target, context)
        changed = not torch.allclose(before, after)
        assert changed == switch


def test_switches_are_checked() -> None:
    with pytest.raises(ValueError, match=r"model\.beyond\.sid_codes must be >= 2"):
        BeyondConfig(semantic_ids=True, sid_codes=1)
    with pytest.raises(ValueError, match=r"model\.beyond\.sid_levels must be >= 1"):
        BeyondConfig(sid_levels=0)
    with pytest.raises(ValueError, match=r"model\.beyond\.id_init must be 'random' or 'mm'"):
        BeyondConfig(id_init="pca")  # type: ignore[arg-type]
    # similarity and positions belong to the Transformer's section, which DIN does not take
    with pytest.raises(ValueError, match=r"model.kind = 'din' takes \[model.din\] keys"):
        ModelConfig(kind="din", kind_section=TargetTransformerConfig(positions=True))


def test_training_with_every_switch_resumes_and_loads_identically(
    tiny_data_master: Path, tiny_config: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmctr
    from mmctr.training import epoch as epochs

    config = tiny_config.with_overrides(
        ["train.epochs=2", "train.patience=2", *(f"model.{k}={v}" for k, v in ALL.items())]
    )
    from mmctr.training import run

    fits: list[int] = []  # fit_items calls: a fresh run fits, a resumed one never refits

    def counted_fit(*args: Any, **kwargs: Any) -> bool:
        fits.append(1)
        return fit_items(*args, **kwargs)

    monkeypatch.setattr(run, "fit_items", counted_fit)
    whole = mmctr.train(tiny_data_master, config, tmp_path / "whole", log=lambda _: None)
    assert len(fits) == 1
    real_epoch = epochs.train_epoch

    def crash_in_epoch_2(*args: Any) -> float:
        if args[4] == 2:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(epochs, "train_epoch", crash_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        mmctr.train(tiny_data_master, config, tmp_path / "killed", log=lambda _: None)
    monkeypatch.setattr(epochs, "train_epoch", real_epoch)
    fits.clear()
    resumed = mmctr.train(
        tiny_data_master, config, tmp_path / "killed", resume=True, log=lambda _: None
    )
    assert not fits  # the codebooks come back
    assert stable(resumed.history) == stable(whole.history)
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)["weights"]
    b = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["weights"]
    assert "items.sid_books" in a and all(torch.equal(a[k], b[k]) for k in a)
    # a loaded run scores what training validated
    scorer = mmctr.load_run(tmp_path / "whole", tiny_data_master)
    assert scorer.evaluate("valid")["auc"] == pytest.approx(whole.best_valid.auc, rel=1e-6)
