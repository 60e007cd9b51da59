"""Figures of an experiment: a bar chart per variant (ablation) and a line over values (sweep).

Drawn on matplotlib's Figure directly (Agg canvas, no pyplot state), so that it runs headless.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

from mmctr.atomic import atomic_path
from mmctr.experiments.report import Summary

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SERIES = (("valid_auc", "valid AUC", "tab:blue"), ("test_auc", "test AUC", "tab:orange"))


def save_png(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return path


def new_figure(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()


def bar_chart(summaries: list[Summary], path: Path, title: str) -> Path:
    """Horizontal bars of mean AUC per variant (best on top) with ± std error bars."""
    shown = [s for s in summaries if "valid_auc" in s.mean]
    series = [sr for sr in SERIES if any(sr[0] in s.mean for s in shown)]
    fig, ax = new_figure(7.5, 1.2 + 0.45 * len(shown) * len(series))
    height = 0.8 / max(len(series), 1)
    lows, highs = [], []
    for j, (key, label, color) in enumerate(series):
        ys = [
            len(shown) - 1 - i + (len(series) - 1 - 2 * j) * height / 2 for i in range(len(shown))
        ]
        means = [s.mean.get(key, math.nan) for s in shown]
        stds = [s.std.get(key, 0.0) for s in shown]
        ax.barh(ys, means, height=height, xerr=stds, color=color, label=label, capsize=3)
        for y, m, sd in zip(ys, means, stds, strict=True):
            if not math.isnan(m):
                ax.annotate(
                    f"{m:.4f}",
                    (m + sd, y),
                    xytext=(4, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=8,
                )
        lows += [m - s for m, s in zip(means, stds, strict=True) if not math.isnan(m)]
        highs += [m + s for m, s in zip(means, stds, strict=True) if not math.isnan(m)]
    ax.set_yticks(range(len(shown)), [s.variant for s in reversed(shown)])
    if lows:  # AUCs of variants sit close together: zoom in on them
        span = max(max(highs) - min(lows), 0.01)
        ax.set_xlim(max(min(lows) - 0.15 * span, 0.0), min(max(highs) + 0.25 * span, 1.0))
    ax.set_xlabel("AUC (mean ± std over seeds)")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_png(fig, path)


def _numeric(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except ValueError:
        return None


def line_plot(summaries: list[Summary], path: Path, param: str) -> Path:
    """Mean AUC against the swept value with a ± std band; log2 axis for wide numeric ranges."""
    shown = [s for s in summaries if "valid_auc" in s.mean]
    numbers = _numeric([s.value for s in shown])
    if numbers is not None:
        order = sorted(range(len(shown)), key=lambda i: numbers[i])
        xs: list[float] = [numbers[i] for i in order]
        shown = [shown[i] for i in order]
    else:  # categorical values keep their given order
        xs = [float(i) for i in range(len(shown))]
    fig, ax = new_figure(6.5, 4.0)
    for key, label, color in SERIES:
        points = [
            (x, s.mean[key], s.std.get(key, 0.0))
            for x, s in zip(xs, shown, strict=True)
            if key in s.mean
        ]
        if not points:
            continue
        x, m, sd = (list(t) for t in zip(*points, strict=True))
        ax.plot(x, m, marker="o", color=color, label=label)
        ax.fill_between(
            x,
            [a - b for a, b in zip(m, sd, strict=True)],
            [a + b for a, b in zip(m, sd, strict=True)],
            color=color,
            alpha=0.2,
        )
    if numbers is not None and min(xs) > 0 and max(xs) / min(xs) >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [s.value for s in shown])
    ax.minorticks_off()
    ax.set_xlabel(param)
    ax.set_ylabel("AUC (mean ± std over seeds)")
    ax.set_title(f"AUC against {param}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_png(fig, path)
