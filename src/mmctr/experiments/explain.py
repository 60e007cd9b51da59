"""What a trained model looks at: attention over each sample's history, as arrays and figures.

Target-aware Transformer: every encoder layer's softmax(QK^T / sqrt(d)) per head
(model/attention_maps.py), optionally next to the same weights under the other mask setting.
DIN: the weight its attention unit gives each history item. Written to OUT/attention.npz,
OUT/explain.json and one OUT/row-<index>.png per sample.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from mmctr.api import Scorer, load_run
from mmctr.atomic import atomic_path, write_json
from mmctr.config import Config
from mmctr.config.model import MaskMode
from mmctr.data import Batch, DataSchema, ItemTable, make_batch
from mmctr.errors import ConfigError
from mmctr.model import DIN, CTRModel, TargetTransformerCTR
from mmctr.model.attention_maps import capture_attention, din_weights
from mmctr.model.sequence import key_masks
from mmctr.training import run as runs

ARRAYS = {
    "rows": "(N,) row index in the split",
    "users": "(N,) user id",
    "target": "(N,) target item id",
    "labels": "(N,) click label, nan when the split has none",
    "history": "(N, L) item ids of the window the model reads, oldest first, 0 = padding",
    "probs": "(N,) predicted click probability (probs_<mask> for the compared mask)",
    "attention": "(N, layers, heads, L queries, L keys) attention probabilities "
    "(attention_<mask> for the compared mask)",
    "received": "(N, layers, L) attention each key receives, averaged over heads and over the "
    "queries whose output the model uses (received_<mask>)",
    "weights": "(N, L) DIN attention-unit weights, 0 on padding",
}


def received_attention(attention: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over heads and kept queries of each key's weight.

    Shape: attention (B, layers, H, L, L), keep (B, L) bool -> (B, layers, L).
    """
    per_query = attention.mean(2)  # (B, layers, L, L)
    w = keep.to(per_query.dtype)[:, None, :, None]  # (B, 1, L, 1) over queries
    return (per_query * w).sum(2) / w.sum(2).clamp(min=1.0)


def _transformer_maps(
    model: TargetTransformerCTR, history: torch.Tensor, target: torch.Tensor, context: torch.Tensor
) -> dict[str, torch.Tensor]:
    with torch.inference_mode(), capture_attention(model) as recorder:
        probs = torch.sigmoid(model(history, target, context))
        window = model.window(history)  # the positions the maps are over
    attention = recorder.stacked()
    _, keep = key_masks(window.ne(0), model.params.mask)
    return {
        "probs": probs,
        "attention": attention,
        "received": received_attention(attention, keep),
        "history": window,
    }


Panels = list[tuple[str, str, np.ndarray]]  # (title, its probs array, (N, rows, L) grid)


def _din_arrays(model: DIN, batch: Batch, arrays: dict[str, np.ndarray]) -> Panels:
    with torch.inference_mode():
        probs = torch.sigmoid(model(batch.history, batch.target, batch.context))
        weights = din_weights(model, batch.history, batch.target)
    arrays.update(probs=probs.numpy(), weights=weights.numpy())
    with model.full_window():
        arrays["history"] = model.window(batch.history).numpy()
    return [("DIN attention-unit weight", "probs", arrays["weights"][:, None, :])]


def _other_mask_twin(model: TargetTransformerCTR, config: Config, schema: DataSchema) -> Any:
    """The same weights under the other mask setting."""
    other: MaskMode = "released" if model.params.mask == "correct" else "correct"
    twin_config = replace(config, model=config.model.replace_section(mask=other))
    twin = runs.new_model(twin_config, schema)
    assert isinstance(twin, TargetTransformerCTR)
    twin.load_state_dict(model.state_dict())
    twin.items.take_table(model.items)  # new items (and their zero id rows) included
    return twin.eval()


def _transformer_arrays(
    model: TargetTransformerCTR,
    twin: TargetTransformerCTR | None,
    batch: Batch,
    arrays: dict[str, np.ndarray],
) -> Panels:
    maps = _transformer_maps(model, batch.history, batch.target, batch.context)
    arrays.update({k: v.numpy() for k, v in maps.items()})
    panels = [(f"mask = {model.params.mask}", "probs", arrays["received"])]
    if twin is not None:
        other = twin.params.mask
        maps = _transformer_maps(twin, batch.history, batch.target, batch.context)
        for key in ("probs", "attention", "received"):
            arrays[f"{key}_{other}"] = maps[key].numpy()
        title = f"mask = {other} (same weights)"
        panels.append((title, f"probs_{other}", arrays[f"received_{other}"]))
    return panels


def explain(
    run_dir: str | Path,
    data_dir: str | Path,
    out: str | Path,
    *,
    rows: int,
    split: str = "valid",
    start: int = 0,
    compare_mask: bool = False,
) -> dict[str, Any]:
    """Write the attention of rows ``start .. start + rows - 1`` of ``split``; returns the
    content of explain.json."""
    out = Path(out)
    scorer = load_run(run_dir, data_dir, device="cpu")
    model, cfg, items, table = scorer.model, scorer.config, scorer.items, scorer.split(split)
    if rows < 1 or start < 0 or start >= len(table):
        raise ConfigError(
            f"--rows {rows} --start {start}: choose rows >= 1 starting inside the {len(table):,} "
            f"rows of {split}"
        )
    index = np.arange(start, min(start + rows, len(table)))
    batch = make_batch(table, index)
    arrays: dict[str, np.ndarray] = {
        "rows": index,
        "users": table.users[index],
        "target": table.target[index],
        "labels": table.labels[index] if table.labels is not None else np.full(len(index), np.nan),
    }
    panels = _panels(scorer, batch, arrays, compare_mask, run_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "attention.npz") as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **cast(dict[str, Any], arrays))
    described = [
        _row_info(arrays, n, items, _figure(out, arrays, n, int(row), items, panels))
        for n, row in enumerate(index)
    ]
    info = {
        "run": str(run_dir),
        "split": split,
        "model": cfg.model.kind,
        "mask": model.mask,
        "compare_mask": compare_mask,
        "arrays": {k: v for k, v in ARRAYS.items() if k in arrays},
        "rows": described,
    }
    write_json(out / "explain.json", info)
    return info


def _panels(
    scorer: Scorer,
    batch: Batch,
    arrays: dict[str, np.ndarray],
    compare_mask: bool,
    run_dir: str | Path,
) -> Panels:
    """Fill ``arrays`` with the model's attention and return the panels to draw per row."""
    model: CTRModel = scorer.model
    if isinstance(model, DIN):
        if compare_mask:
            raise ConfigError(
                "--compare-mask applies to the target-aware Transformer; DIN has no mask setting"
            )
        return _din_arrays(model, batch, arrays)
    if isinstance(model, TargetTransformerCTR) and model.sequence is not None:
        twin = _other_mask_twin(model, scorer.config, scorer.schema) if compare_mask else None
        return _transformer_arrays(model, twin, batch, arrays)
    raise ConfigError(
        f"{run_dir}: the model has no attention over the history it could show "
        "(a target_transformer with use_sequence = false, or another kind)"
    )


def _figure(
    out: Path, arrays: dict[str, np.ndarray], n: int, row: int, items: ItemTable, panels: Panels
) -> str:
    """Draw row ``n``'s heat map; returns the file name."""
    from mmctr.experiments.heatmaps import row_figure

    png = row_figure(
        out / f"row-{row}.png",
        _row_title(arrays, n, items),
        arrays["history"][n],
        items,
        panels=[(f"{t}, p = {arrays[p][n]:.3f}", grid[n]) for t, p, grid in panels],
        signed="weights" in arrays,  # DIN's unnormalised weights take either sign
    )
    return png.name


def item_tags(items: ItemTable, item: int) -> list[int]:
    return [int(t) for t in items.tags[item] if t != 0]


def _row_title(arrays: dict[str, np.ndarray], n: int, items: ItemTable) -> str:
    target = int(arrays["target"][n])
    label = arrays["labels"][n]
    shown = "?" if np.isnan(label) else f"{int(label)}"
    return (
        f"row {int(arrays['rows'][n])}: user {int(arrays['users'][n])}, target {target} "
        f"(tags {item_tags(items, target)}), label {shown}"
    )


def _row_info(arrays: dict[str, np.ndarray], n: int, items: ItemTable, png: str) -> dict[str, Any]:
    history = arrays["history"][n]
    label = float(arrays["labels"][n])
    return {
        "row": int(arrays["rows"][n]),
        "user": int(arrays["users"][n]),
        "target": int(arrays["target"][n]),
        "target_tags": item_tags(items, int(arrays["target"][n])),
        "label": None if np.isnan(label) else label,
        "prob": float(arrays["probs"][n]),
        "history": [int(i) for i in history if i != 0],
        "figure": png,
    }
