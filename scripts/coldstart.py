"""What the frozen multimodal embedding is worth for items nobody has clicked yet (cold start).

A seeded share of the items is held out of training entirely: train and valid rows whose
target is one of them are dropped, and their id embedding is the zero padding row everywhere
(``ItemEncoder.mark_new_items``), so the model never learns an id for them; it sees them, in
histories and when scoring, only through their tags and frozen embedding, as it would see an
item registered after training. Test rows are then scored in two groups: targets held out
(cold) and the rest (warm).

    PYTHONPATH=src python scripts/coldstart.py --data data/ml50k --config cpu \\
        --out exp/coldstart --seeds 3 --variants full,no-mm

Each run is an ordinary run folder under OUT/runs (resumable); OUT/results.jsonl gets one line
a run and OUT/results.md the table (mean ± sample std over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmctr.atomic import write_text
from mmctr.config import Config, load_config
from mmctr.data import Dataset, Split, load_dataset
from mmctr.model import build_model
from mmctr.training import checkpoint as ckpt
from mmctr.training.inference import attach_items, predict_probs
from mmctr.training.loop import fit
from mmctr.training.metrics import all_metrics

VARIANTS = {"full": [], "no-mm": ["model.use_multimodal=false"]}


def held_out_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    count = round((num_items - 1) * fraction)
    return np.sort(rng.choice(np.arange(1, num_items), size=count, replace=False))


def without_targets(split: Split, held: np.ndarray) -> Split:
    return split.take(~np.isin(split.target, held))


def run_one(
    config: Config, data: Dataset, held: np.ndarray, run_dir: Path, threads: int
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.manual_seed(config.train.seed)
    model = build_model(config.model, ckpt.dims_of(data.schema))
    model.items.mark_new_items(torch.from_numpy(held).long())
    run = ckpt.RunDir(run_dir)
    trained = Dataset(data.schema, data.items, {s: without_targets(data[s], held)
                                               for s in ("train", "valid")})  # fmt: skip
    if not run.finished():
        fit(model, trained, config, run_dir, resume=run.has_run(), progress=False)
    else:
        model.load_state_dict(ckpt.load(run.model)["weights"])
        attach_items(model, data.items)
    test = data["test"]
    probs = predict_probs(model, test, config.train.eval_batch_size)
    cold = np.isin(test.target, held)
    assert test.labels is not None
    row: dict[str, Any] = {"run": run_dir.name, "seed": config.train.seed}
    for name, rows in (("cold", cold), ("warm", ~cold), ("all", np.ones_like(cold))):
        metrics = all_metrics(test.users[rows], test.labels[rows], probs[rows])
        row.update(
            {f"{name}_{k}": v for k, v in metrics.items()}, **{f"{name}_rows": int(rows.sum())}
        )
    row["best_epoch"] = ckpt.read_summary(run)["best_epoch"]
    return row


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| variant | runs | cold-item test AUC | warm test AUC | all test AUC |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for variant in VARIANTS:
        mine = [r for r in rows if r["run"].startswith(f"{variant}-seed")]
        if not mine:
            continue
        cells = []
        for key in ("cold_auc", "warm_auc", "all_auc"):
            values = [r[key] for r in mine]
            mean = sum(values) / len(values)
            std = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))
            cells.append(f"{mean:.4f} ± {std:.4f}")
        lines.append(f"| `{variant}` | {len(mine)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--config", default="cpu")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--held-fraction", type=float, default=0.1)
    p.add_argument("--held-seed", type=int, default=2025)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    args = p.parse_args()
    base = load_config(args.config, args.overrides)
    data = load_dataset(args.data, base.data, ("train", "valid", "test"))
    held = held_out_items(data.schema.num_items, args.held_fraction, args.held_seed)
    print(f"{len(held):,} of {data.schema.num_items - 1:,} items held out of training")
    results = args.out / "results.jsonl"
    done = [json.loads(x) for x in results.read_text().splitlines()] if results.exists() else []
    for variant in args.variants.split(","):
        for k in range(args.seeds):
            name = f"{variant}-seed{k}"
            if any(r["run"] == name for r in done):
                continue
            config = base.with_overrides([*VARIANTS[variant], f"train.seed={base.train.seed + k}"])
            row = run_one(config, data, held, args.out / "runs" / name, args.threads)
            done.append(row)
            write_text(results, "".join(json.dumps(r) + "\n" for r in done))
            print(f"{name}: cold auc {row['cold_auc']:.4f}  warm auc {row['warm_auc']:.4f}")
    write_text(args.out / "results.md", table(done))
    print(table(done))


if __name__ == "__main__":
    main()
