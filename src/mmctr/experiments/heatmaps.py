"""One figure per sample: attention over its history, layers x history items, panels side by side.

All padding positions are folded into one column, "padding (Σ)", holding their total weight:
it is 0 under the correct mask and most of the weight under the released one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmctr.data import ItemTable
from mmctr.experiments.plots import save_png

MAX_ITEMS = 30  # most recent history items drawn; older ones are in attention.npz only
ANNOTATE_UP_TO = 20  # write the value in each cell when there are at most this many columns


def _columns(
    history: np.ndarray, grid: np.ndarray, items: ItemTable
) -> tuple[list[str], np.ndarray, int]:
    """Labels and values of the drawn columns, and how many older items were left out."""
    pad = history == 0
    real = np.flatnonzero(~pad)
    shown = real[-MAX_ITEMS:]
    labels, values = [], []
    if pad.any():
        labels.append(f"padding\n(Σ {int(pad.sum())})")
        values.append(grid[:, pad].sum(1))
    for pos in shown:
        item = int(history[pos])
        tags = [str(int(t)) for t in items.tags[item] if t != 0][:3]
        labels.append(f"{item}\n" + (f"t{','.join(tags)}" if tags else "no tags"))
        values.append(grid[:, pos])
    return labels, np.stack(values, axis=1), len(real) - len(shown)


def row_figure(
    path: Path,
    title: str,
    history: np.ndarray,
    items: ItemTable,
    *,
    panels: list[tuple[str, np.ndarray]],
    signed: bool = False,
) -> Path:
    """Draw each panel's (rows, L) grid over ``history`` (L,) item ids; ``signed`` for DIN's
    unnormalised weights (a diverging scale around 0), else probabilities on [0, 1]."""
    from matplotlib.figure import Figure

    drawn = [(name, *_columns(history, grid, items)) for name, grid in panels]
    num_cols = len(drawn[0][1])
    num_rows = drawn[0][2].shape[0]
    width = max(4.0, 1.4 + 0.42 * num_cols)
    fig = Figure(figsize=(width * len(drawn), 1.9 + 0.5 * num_rows), layout="constrained")
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    top = 1.0
    if signed:  # DIN's weights are unbounded: a scale symmetric about 0 keeps 0 white
        top = max(float(np.abs(values).max()) for _, _, values, _ in drawn) or 1.0
    cmap, bottom = ("RdBu_r", -top) if signed else ("viridis", 0.0)
    image = None
    for ax, (name, labels, values, left_out) in zip(axes, drawn, strict=True):
        image = ax.imshow(values, aspect="auto", cmap=cmap, vmin=bottom, vmax=top)
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        row_names = ["weight"] if signed else [f"layer {i + 1}" for i in range(num_rows)]
        ax.set_yticks(range(num_rows), row_names, fontsize=8)
        more = f" ({left_out} older items not shown)" if left_out else ""
        ax.set_title(name + more, fontsize=9)
        if num_cols <= ANNOTATE_UP_TO:
            for (r, c), v in np.ndenumerate(values):
                # dark cells of viridis need white text; the diverging map is light near 0
                dark = not signed and v < 0.5
                colour = "white" if dark else "black"
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color=colour)
    assert image is not None
    what = "weight" if signed else "attention received (mean over heads and queries)"
    fig.colorbar(image, ax=list(axes), shrink=0.8, label=what)
    fig.suptitle(title, fontsize=9)
    return save_png(fig, path)
