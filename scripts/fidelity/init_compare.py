"""The two implementations' fresh initialisations, tensor by tensor: std, max |w|, zero row 0."""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import oracle
import torch

from mmctr.config import load_config
from mmctr.data import load_dataset
from mmctr.training import run as runs

CONFIG = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "release-small.toml")


def stats(t: torch.Tensor) -> dict[str, float | bool]:
    t = t.detach()
    return dict(
        std=float(t.std()) if t.numel() > 1 else 0.0,
        max=float(t.abs().max()),
        zero_row0=bool(t.dim() == 2 and not t[0].any()),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=20242025)
    ap.add_argument("--work", default="/tmp/mmctr-oracle")
    ap.add_argument("--set", action="append", default=[], help="mmctr override, key=value")
    ap.add_argument("--out")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    _, rel = oracle.build(oracle.params_for(a.data, a.work, a.seed))
    cfg = load_config(CONFIG, [*a.set, f"train.seed={a.seed}"])
    data = load_dataset(a.data, cfg.data, ("train",))
    mm = runs.new_model(cfg, data.schema)  # seeded from train.seed, as a run starts
    name = {id(p): n for n, p in mm.named_parameters()}
    rows = []
    for r, m in oracle.weight_pairs(rel, mm):
        rows.append(dict(tensor=name[id(m)], shape=list(m.shape), release=stats(r), mmctr=stats(m)))
        s, t = rows[-1]["release"], rows[-1]["mmctr"]
        print(
            f"{rows[-1]['tensor']:<34} release std {s['std']:.3e} max {s['max']:.3e} "
            f"row0=0 {s['zero_row0']!s:<5}  mmctr std {t['std']:.3e} max {t['max']:.3e} "
            f"row0=0 {t['zero_row0']}"
        )
    # nn.TransformerEncoder deep-copies one layer, and FuxiCTR re-initialises only exact
    # nn.Linear modules: do the release's layers start with equal attention weights?
    layers = rel.transformer_encoder.transformer_encoder.layers
    same = {
        "in_proj": torch.equal(
            layers[0].self_attn.in_proj_weight, layers[1].self_attn.in_proj_weight
        ),
        "out_proj": torch.equal(
            layers[0].self_attn.out_proj.weight, layers[1].self_attn.out_proj.weight
        ),
        "linear1": torch.equal(layers[0].linear1.weight, layers[1].linear1.weight),
    }
    print("release: layer 0 and layer 1 start equal:", same)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(dict(tensors=rows, release_layers_equal=same), f, indent=1)


if __name__ == "__main__":
    main()
