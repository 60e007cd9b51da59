"""What a search leaves in OUT besides its trials: the table of trials (``trials.csv`` and
``results.md``), each param's importance, the optimisation history and a parallel-coordinate
plot (PNG), and the best config as a TOML file that ``--config`` takes (``best.toml``).

Trials are chosen on valid AUC alone; the test split is scored for the best trial only
(``best.json``), so that the test set never takes part in the choice.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from mmctr.atomic import write_json, write_text
from mmctr.config import Config
from mmctr.config.write import to_toml
from mmctr.experiments.plots import new_figure, save_png
from mmctr.search.space import Space, set_text, trial_config
from mmctr.search.study import RUN_ATTR, best_trial, counted

if TYPE_CHECKING:
    from matplotlib.figure import Figure

States = optuna.trial.TrialState
COLUMNS = [
    "trial", "state", "valid_auc", "best_epoch", "epochs", "train_seconds", "peak_rss_gb",
    "wall_seconds",
]  # fmt: skip


def trial_rows(study: optuna.Study, space: Space) -> list[dict[str, Any]]:
    """One row per trial that ran to an outcome, best valid AUC first (pruned trials by the
    best AUC they reached; failed ones last)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state in (States.RUNNING, States.WAITING) or t.user_attrs.get("interrupted"):
            continue
        value = t.value if t.state == States.COMPLETE else t.user_attrs.get("value")
        row: dict[str, Any] = {
            "trial": t.number,
            "state": t.state.name.lower().replace("fail", "failed"),
            "valid_auc": value,
            **{k: t.user_attrs.get(k) for k in COLUMNS[3:]},
            "run": t.user_attrs.get(RUN_ATTR),
        }
        for key in space.keys:
            row[key] = t.params.get(key)
        if t.state == States.FAIL:
            row["error"] = t.user_attrs.get("error", "")
        rows.append(row)
    return sorted(rows, key=lambda r: (r["valid_auc"] is None, -(r["valid_auc"] or 0.0)))


def importances(study: optuna.Study) -> dict[str, float] | str:
    """Each param's share of the variance of valid AUC (Optuna's fANOVA), or why there is
    none yet."""
    complete = study.get_trials(deepcopy=False, states=(States.COMPLETE,))
    if len(complete) < 2:
        return "needs at least 2 complete trials"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError) as exc:
        return f"not computed: {exc}"


def write_report(
    study: optuna.Study,
    space: Space,
    base: Config,
    out: Path,
    test_metrics: dict[str, float] | None = None,
) -> list[Path]:
    """Write the tables, plots and best config of ``study`` into ``out``; returns the files."""
    rows = trial_rows(study, space)
    files = [_write_csv(rows, space, out / "trials.csv")]
    best = best_trial(study)
    importance = importances(study)
    if best is not None:
        config = trial_config(base, _params(best, space))
        comment = (
            f"The best config of the search in {out}: trial {best.number}, valid AUC "
            f"{best.value:.6f}.\nWritten by mmctr experiment search; train it with "
            f"mmctr train --config {out / 'best.toml'}"
        )
        write_text(out / "best.toml", to_toml(config, comment=comment))
        record = {
            "trial": best.number,
            "valid_auc": best.value,
            "params": _params(best, space),
            "run": best.user_attrs.get(RUN_ATTR),
            "test": test_metrics,
        }
        write_json(out / "best.json", record)
        files += [out / "best.toml", out / "best.json"]
    text = _markdown(study, space, rows, importance, best, test_metrics)
    write_text(out / "results.md", text)
    files.append(out / "results.md")
    if any(r["valid_auc"] is not None for r in rows):
        files.append(save_png(_history_figure(study), out / "history.png"))
        if best is not None:
            files.append(save_png(_parallel_figure(study, space), out / "parallel.png"))
    return files


def _params(trial: optuna.trial.FrozenTrial, space: Space) -> dict[str, Any]:
    """The trial's params as the config takes them (list choices back from their labels)."""
    out = {}
    for param in space.params:
        if param.key in trial.params:
            value = trial.params[param.key]
            if param.type == "categorical":
                value = param.choices[param.labels.index(value)]
            out[param.key] = value
    return out


def _write_csv(rows: list[dict[str, Any]], space: Space, path: Path) -> Path:
    fields = [*COLUMNS, *space.keys, "run", "error"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in fields})
    write_text(path, buf.getvalue())
    return path


def _cell(value: Any, column: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if column.endswith("seconds"):
            return f"{value:.1f}"
        return f"{value:.4f}" if column.endswith("auc") else f"{value:.3g}"
    return set_text(value) if isinstance(value, list | tuple) else str(value)


def _markdown(
    study: optuna.Study,
    space: Space,
    rows: list[dict[str, Any]],
    importance: dict[str, float] | str,
    best: optuna.trial.FrozenTrial | None,
    test: dict[str, float] | None,
) -> str:
    states = [r["state"] for r in rows]
    lines = [
        "# Search",
        "",
        f"{counted(study)} trials finished: {states.count('complete')} complete, "
        f"{states.count('pruned')} pruned, {states.count('failed')} failed. Trials are "
        "compared on valid AUC (pruned ones by the best they reached before they were "
        "stopped); test is scored for the best trial only.",
        "",
    ]
    if best is not None:
        lines.append(f"**Best: trial {best.number}**, valid AUC {best.value:.4f}" + (
            f", test AUC {test['auc']:.4f} (logloss {test['logloss']:.4f}, gAUC "
            f"{test['gauc']:.4f})" if test else ""
        ) + ". Its config: `best.toml`.")  # fmt: skip
        lines += [""] + [f"- `{k}` = {_cell(v)}" for k, v in _params(best, space).items()]
        lines.append("")
    lines += ["## Importance", ""]
    if isinstance(importance, str):
        lines.append(f"Not computed ({importance}).")
    else:
        lines += ["| param | importance |", "| --- | ---: |"]
        lines += [f"| `{k}` | {v:.3f} |" for k, v in importance.items()]
    keys = space.keys
    lines += ["", "## Trials", "", "| " + " | ".join([*COLUMNS, *keys]) + " |"]
    lines.append("| " + " | ".join(["---:"] * (len(COLUMNS) + len(keys))) + " |")
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(k), k) for k in [*COLUMNS, *keys]) + " |")
    return "\n".join(lines) + "\n"


def _history_figure(study: optuna.Study) -> Figure:
    """Each trial's valid AUC by trial number (pruned: the best it reached), and the best so
    far."""
    fig, ax = new_figure(7.5, 4.0)
    done = [t for t in study.get_trials(deepcopy=False)
            if t.state in (States.COMPLETE, States.PRUNED)]  # fmt: skip
    for state, marker, label in (
        (States.COMPLETE, "o", "complete"),
        (States.PRUNED, "x", "pruned"),
    ):
        xs = [t.number for t in done if t.state == state]
        ys = [_value(t) for t in done if t.state == state]
        if xs:
            ax.scatter(xs, ys, marker=marker, label=label, s=24)
    complete = sorted((t.number, _value(t)) for t in done if t.state == States.COMPLETE)
    if complete:
        best = np.maximum.accumulate([v for _, v in complete])
        ax.step([n for n, _ in complete], best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("valid AUC")
    ax.set_title("Optimisation history")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _value(trial: optuna.trial.FrozenTrial) -> float:
    if trial.value is not None:
        return float(trial.value)
    return float(trial.user_attrs.get("value") or math.nan)


def _parallel_figure(study: optuna.Study, space: Space) -> Figure:
    """One vertical axis per param, each complete trial a line through the values it has
    (conditional params: only where drawn), coloured by valid AUC; log-scale params on a log
    axis, categories evenly spaced, each axis labelled with its range."""
    trials = study.get_trials(deepcopy=False, states=(States.COMPLETE,))
    keys = [k for k in space.keys if any(k in t.params for t in trials)]
    fig, ax = new_figure(max(6.0, 1.8 * (len(keys) + 1)), 4.5)
    values = np.array([t.value for t in trials], dtype=float)
    low, span = values.min(), (values.max() - values.min()) or 1.0
    cmap = _colormap()
    columns = [_axis_positions(space, key, trials) for key in keys]
    for i in np.argsort(values):  # the best drawn last, on top
        ys = [col[i] for col in columns] + [(values[i] - low) / span]
        xs = [x for x, y in enumerate(ys) if not math.isnan(y)]
        ax.plot(xs, [ys[x] for x in xs], color=cmap((values[i] - low) / span), alpha=0.8, lw=1.2,
                marker="o", ms=3)  # fmt: skip
    for x, key in enumerate(keys):
        ax.axvline(x, color="0.8", lw=0.8, zorder=0)
        for y, text in _axis_labels(space, key):
            ax.annotate(text, (x, y), xytext=(3, 0), textcoords="offset points", fontsize=7,
                        va="center")  # fmt: skip
    ax.axvline(len(keys), color="0.8", lw=0.8, zorder=0)
    for y, v in ((0.0, values.min()), (1.0, values.max())):
        ax.annotate(f"{v:.4f}", (len(keys), y), xytext=(3, 0), textcoords="offset points",
                    fontsize=7, va="center")  # fmt: skip
    ax.set_xticks(range(len(keys) + 1), [*keys, "valid AUC"], rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(keys) + 0.6)
    ax.set_title(f"Complete trials ({len(trials)}), coloured by valid AUC")
    return fig


def _axis_labels(space: Space, key: str) -> list[tuple[float, str]]:
    param = next(p for p in space.params if p.key == key)
    if param.type == "categorical":
        labels = [str(label) for label in param.labels]
        step = 1 / max(len(labels) - 1, 1)
        return [(i * step, label) for i, label in enumerate(labels)]
    return [(0.0, f"{param.low:.3g}"), (1.0, f"{param.high:.3g}")]


def _colormap() -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"]


def _axis_positions(space: Space, key: str, trials: list[optuna.trial.FrozenTrial]) -> list[float]:
    """Each trial's value of ``key`` scaled to [0, 1] on its axis (nan where not drawn)."""
    param = next(p for p in space.params if p.key == key)
    raw = [t.params.get(key) for t in trials]
    if param.type == "categorical":
        labels = list(param.labels)
        step = 1 / max(len(labels) - 1, 1)
        return [math.nan if v is None else labels.index(v) * step for v in raw]
    low, high = float(param.low or 0), float(param.high or 0)
    scale = math.log if param.log else float

    def pos(v: Any) -> float:
        if v is None:
            return math.nan
        lo, hi = scale(low), scale(high)
        return (scale(float(v)) - lo) / ((hi - lo) or 1.0)

    return [pos(v) for v in raw]
