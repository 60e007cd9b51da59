"""The 2nd place's release (QIN_variety_v9, github:salmon1802/QIN on FuxiCTR 2.3.7) built from a
data dir at a small config, and the map from its parameters to mmctr's QIN. Imports the release
from $QIN_RELEASE (an export of that repository, never copied here).

Run as a script it builds both sides fresh and prints every pair's initial statistics."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import torch
from torch import nn

RELEASE = os.environ.get("QIN_RELEASE")
if not RELEASE or not os.path.isfile(os.path.join(RELEASE, "src", "QIN_variety_v9.py")):
    sys.exit("set QIN_RELEASE to an export of github.com/salmon1802/QIN")
sys.path.insert(0, RELEASE)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuxi_setup  # noqa: E402

import src as model_zoo  # noqa: E402  (the release's models)
from src import mmctr_dataloader as loader  # noqa: E402, F401  (used by the other scripts)

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "qin-cpu.toml")
# the release's QIN_variety_v9 config (config/qin_config/model_config.yaml) at qin-cpu's sizes:
# embedding 128 -> 16, num_row 4 -> 3, max_len 64 -> 20, batch 8192 -> 1024; FuxiCTR's defaults
# made explicit
SMALL: dict[str, Any] = dict(
    model="QIN_variety_v9",
    embedding_dim=16,
    num_layers=4,
    num_row=3,
    net_dropout=0.1,
    batch_norm=True,
    embedding_regularizer=2e-4,
    net_regularizer=0,
    learning_rate=2e-3,
    batch_size=1024,
    max_len=20,
    factor=0.5,
    accumulation_steps=1,
    max_gradient_norm=10.0,
    reduce_lr_on_plateau=True,
    loss="binary_crossentropy",
    optimizer="adam",
    epochs=4,
    early_stop_patience=1,
    shuffle=True,
    monitor={"AUC": 1, "logloss": 0},
    monitor_mode="max",
    metrics=["AUC", "logloss"],
    task="binary_classification",
    verbose=0,
    save_best_only=True,
    eval_steps=None,
    group_id="user_id",
    num_workers=0,
    gpu=-1,
)


def params_for(data: str, work: str, seed: int, mm_dim: int = 128, **changes: Any) -> dict:
    """The parameters run_expid.py would assemble from the release's config dir, for ``data``
    (its dataset_config.yaml, vocabularies from the data; ``mm_dim``: item_emb_d128's width,
    128 as released)."""
    rdata = fuxi_setup.release_data(data, work)
    dataset_id = "qin_" + os.path.basename(rdata) + f"_{mm_dim}"
    cols = fuxi_setup.feature_cols(data, mm_dim)
    params = fuxi_setup.release_params(
        SMALL, rdata, work, seed, dataset_id, f"QIN_variety_v9_{seed}", cols
    )
    params.update(changes)
    return params


def build(params: dict[str, Any]) -> tuple[Any, nn.Module]:
    """The feature map and the model, as run_expid.py builds them."""
    return fuxi_setup.build(params, model_zoo)


def _encoder_linear(module: nn.Module) -> nn.Linear:
    """item_emb_d128's Linear (stepwise.py may wrap it to feed it in its own dtype)."""
    return module if isinstance(module, nn.Linear) else module.linear


def weight_pairs(rel: Any, mm: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(release tensor, mmctr tensor) for every parameter, matched by role; each parameter of
    either side exactly once, shapes equal."""
    emb = rel.embedding_layer.embedding_layer
    tables = emb.embedding_layers
    pairs = [
        (tables[n].weight, mm.context.fields[f].weight)
        for f, n in enumerate(("likes_level", "views_level"))
    ]
    pairs += [
        (tables["item_id"].weight, mm.items.id_emb.weight),
        (tables["item_tags"].weight, mm.items.tag_emb.weight),
        (_encoder_linear(emb.feature_encoders["item_emb_d128"]).weight, mm.items.mm_proj.weight),
    ]
    att = rel.attention_layers
    pairs += [
        (att.W_q.weight, mm.attention.query.weight),
        (att.W_k.weight, mm.attention.key.weight),
        (att.W_v.weight, mm.attention.value.weight),
        (att.W_o.weight, mm.attention.output.weight),
    ]
    qnn = rel.qnn
    assert len(qnn.layer) == len(mm.qnn.blocks), (len(qnn.layer), len(mm.qnn.blocks))
    for i, block in enumerate(mm.qnn.blocks):
        lin = qnn.layer[i].linear[0]
        pairs += [
            (lin.weight, block[0].rows.weight),
            (lin.bias, block[0].rows.bias),
            (qnn.activation[i].weight, block[2].weight),
        ]
        if len(qnn.norm):
            pairs += [(qnn.norm[i].weight, block[1].weight), (qnn.norm[i].bias, block[1].bias)]
    pairs += [(qnn.fc.weight, mm.output.weight), (qnn.fc.bias, mm.output.bias)]
    for a, b in pairs:
        assert a.shape == b.shape, (a.shape, b.shape)
    for side, params in (("release", rel.parameters()), ("mmctr", mm.parameters())):
        ids = [id(p) for p in params]
        paired = [id(pair[0 if side == "release" else 1]) for pair in pairs]
        assert sorted(ids) == sorted(paired), f"{side}: not every parameter paired exactly once"
    return pairs


def buffer_pairs(rel: Any, mm: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batch norms' running statistics (training uses batch statistics; eval these)."""
    pairs = []
    for norm, block in zip(rel.qnn.norm, mm.qnn.blocks, strict=True):
        pairs += [
            (norm.running_mean, block[1].running_mean),
            (norm.running_var, block[1].running_var),
        ]
    return pairs


def embedding_penalty(rel: Any) -> float:
    """The release's regulariser as it adds it to the loss (FuxiCTR's regularization_loss)."""
    return float(rel.regularization_loss())


def mmctr_penalty(mm: nn.Module, reg: float) -> torch.Tensor:
    """(reg / 2) |P|^2 over mmctr's item and context encoders, what train.embedding_reg adds
    to the gradient (as Adam weight decay) but not to the loss it reports."""
    params = [p for part in ("items", "context") for p in mm.get_submodule(part).parameters()]
    return (reg / 2) * sum((p.detach() ** 2).sum() for p in params)


def mmctr_model(data: str, overrides: list[str]) -> tuple[Any, Any, nn.Module]:
    """mmctr's QIN at qin-cpu (plus ``overrides``): (config, dataset, model with items)."""
    from mmctr.config import load_config
    from mmctr.data import load_dataset
    from mmctr.training import run as runs

    cfg = load_config(CONFIG, overrides)
    dataset = load_dataset(data, cfg.data, ("train",))
    return cfg, dataset, runs.new_model(cfg, dataset.schema, dataset.items)


def stats(t: torch.Tensor) -> dict[str, float | bool]:
    t = t.detach()
    return dict(
        std=float(t.std()) if t.numel() > 1 else 0.0,
        max=float(t.abs().max()),
        mean=float(t.mean()),
        zero_row0=bool(t.dim() == 2 and not t[0].any()),
    )


def main() -> None:
    """Both sides fresh, each from its own init: every pair's std, max |w|, mean, zero row 0."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--mm-dim", type=int, default=128)
    ap.add_argument("--seed", type=int, default=20242025)
    ap.add_argument("--work", default="/tmp/qin-oracle")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    _, rel = build(params_for(a.data, a.work, a.seed, a.mm_dim))
    _, _, mm = mmctr_model(a.data, [f"model.mm_dim={a.mm_dim}", f"train.seed={a.seed}"])
    name = {id(p): n for n, p in mm.named_parameters()}
    rows = []
    for r, m in weight_pairs(rel, mm):
        s, t = stats(r), stats(m)
        rows.append(dict(tensor=name[id(m)], shape=list(m.shape), release=s, mmctr=t))
        print(
            f"{name[id(m)]:<26} {list(m.shape)!s:<12} release std {s['std']:.3e} "
            f"max {s['max']:.3e} mean {s['mean']:+.2e} row0=0 {s['zero_row0']!s:<5} | "
            f"mmctr std {t['std']:.3e} max {t['max']:.3e} mean {t['mean']:+.2e} "
            f"row0=0 {t['zero_row0']}"
        )
    total = sum(p.numel() for p in mm.parameters())
    print(f"{len(rows)} tensors, {total} parameters on each side, every one paired once")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(tensors=rows, parameters=total), f, indent=1)


if __name__ == "__main__":
    main()
