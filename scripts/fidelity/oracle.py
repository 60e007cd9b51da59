"""The release's Transformer_DCN at its small config, built from a data dir; and the map from
its parameters to mmctr's. Imports the release from $MMCTR_RELEASE (a clone, never copied)."""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch import nn

RELEASE = os.environ.get("MMCTR_RELEASE")
if not RELEASE or not os.path.isdir(os.path.join(RELEASE, "src")):
    sys.exit("set MMCTR_RELEASE to a clone of github.com/pinskyrobin/WWW2025_MMCTR")
sys.path.insert(0, RELEASE)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuxi_setup  # noqa: E402

import src as model_zoo  # noqa: E402  (the release's models)
from src import mmctr_dataloader as loader  # noqa: E402

# the release's small config (SPEC section 8), with FuxiCTR's defaults made explicit
SMALL: dict[str, Any] = dict(
    model="Transformer_DCN",
    embedding_dim=16,
    dim_feedforward=64,
    transformer_layers=2,
    num_heads=1,
    transformer_dropout=0.2,
    net_dropout=0.2,
    dcn_cross_layers=3,
    dcn_hidden_units=[256, 128],
    mlp_hidden_units=[64, 32],
    batch_norm=False,
    embedding_regularizer=0,
    net_regularizer=0,
    max_gradient_norm=10.0,
    reduce_lr_on_plateau=True,
    loss="binary_crossentropy",
    optimizer="adam",
    learning_rate=1e-3,
    batch_size=1024,
    shuffle=True,
    max_len=20,
    first_k_cols=4,
    concat_max_pool=True,
    epochs=3,
    early_stop_patience=1,
    hidden_activations="relu",
    monitor={"AUC": 1},
    monitor_mode="max",
    metrics=["logloss", "AUC"],
    task="binary_classification",
    verbose=0,
    save_best_only=True,
    eval_steps=None,
    group_id="user_id",
    accumulation_steps=1,
    num_workers=0,
    gpu=-1,
)


def params_for(data: str, work: str, seed: int, **changes: Any) -> dict[str, Any]:
    """The parameters run_expid.py would assemble from a config dir, for ``data``."""
    rdata = fuxi_setup.release_data(data, work)
    dataset_id = "mmctr_" + str(abs(hash(os.path.abspath(data))) % 10**8)
    cols = fuxi_setup.feature_cols(data)
    params = fuxi_setup.release_params(
        SMALL, rdata, work, seed, dataset_id, f"Transformer_DCN_{seed}", cols
    )
    params.update(changes)
    return params


def set_mask(mode: str) -> None:
    """``correct``: hand the Transformer 1 at padding, as a key-padding mask means."""
    original = loader.BatchCollator.__call__
    original = getattr(original, "_original", original)

    def call(self: Any, batch: Any) -> Any:
        features, items, mask = original(self, batch)
        return features, items, (1.0 - mask) if mode == "correct" else mask

    call._original = original  # type: ignore[attr-defined]
    loader.BatchCollator.__call__ = call


def build(params: dict[str, Any]) -> tuple[Any, nn.Module]:
    """The feature map and the model, as run_expid.py builds them."""
    return fuxi_setup.build(params, model_zoo)


def _linears(module: nn.Module) -> list[nn.Linear]:
    return [m for m in module.modules() if isinstance(m, nn.Linear)]


def weight_pairs(rel: Any, mm: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(release tensor, mmctr tensor) for every parameter, matched by role."""
    emb = rel.embedding_layer.embedding_layer
    tables = emb.embedding_layers
    pairs = [
        (tables[n].weight, mm.context.fields[f].weight)
        for f, n in enumerate(("likes_level", "views_level"))
    ]
    pairs += [
        (tables["item_id"].weight, mm.items.id_emb.weight),
        (tables["item_tags"].weight, mm.items.tag_emb.weight),
        (emb.feature_encoders["item_emb_d128"].weight, mm.items.mm_proj.weight),
    ]
    seq = rel.transformer_encoder
    for r, m in zip(seq.transformer_encoder.layers, mm.sequence.layers, strict=True):
        a = r.self_attn
        pairs += [
            (a.in_proj_weight, m.qkv.weight),
            (a.in_proj_bias, m.qkv.bias),
            (a.out_proj.weight, m.attn_out.weight),
            (a.out_proj.bias, m.attn_out.bias),
            (r.linear1.weight, m.ff_in.weight),
            (r.linear1.bias, m.ff_in.bias),
            (r.linear2.weight, m.ff_out.weight),
            (r.linear2.bias, m.ff_out.bias),
            (r.norm1.weight, m.norm1.weight),
            (r.norm1.bias, m.norm1.bias),
            (r.norm2.weight, m.norm2.weight),
            (r.norm2.bias, m.norm2.bias),
        ]
    pairs += [
        (seq.out_linear.weight, mm.sequence.pool.weight),
        (seq.out_linear.bias, mm.sequence.pool.bias),
    ]
    for r_block, m_block in (
        (rel.crossnet, mm.cross),
        (rel.parallel_dnn, mm.deep),
        (rel.mlp, mm.head),
    ):
        r_lin, m_lin = _linears(r_block), _linears(m_block)
        assert len(r_lin) == len(m_lin), (len(r_lin), len(m_lin))
        for a, b in zip(r_lin, m_lin, strict=True):
            pairs += [(a.weight, b.weight), (a.bias, b.bias)]
    for a, b in pairs:
        assert a.shape == b.shape, (a.shape, b.shape)
    covered = sum(b.numel() for _, b in pairs)
    total = sum(p.numel() for p in mm.parameters())
    assert covered == total == sum(p.numel() for p in rel.parameters()), (covered, total)
    return pairs
