"""The tables of an experiment: every run (results.csv) and mean ± std per variant (results.md)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

from mmctr.atomic import write_text
from mmctr.experiments.plan import Plan
from mmctr.experiments.rows import BUCKET_COLUMNS, COLUMNS, METRIC_COLUMNS, RunRow

STATS = (
    *METRIC_COLUMNS,
    *BUCKET_COLUMNS.values(),
    "best_epoch",
    "epochs",
    "train_seconds",
    "train_samples_per_s",
    "peak_rss_gb",
    "parameters",
)
TITLES = {
    "ablation": "Ablation",
    "peers": "Peers on the same data",
    "confirm": "A search's trials trained again",
}


@dataclass(frozen=True)
class Summary:
    """One variant over its seeds; ``mean``/``std`` hold only the statistics that have values."""

    variant: str
    value: str
    runs: int  # finished runs
    failed: int
    mean: dict[str, float]
    std: dict[str, float]  # sample std (n - 1); 0 for a single run


def csv_text(rows: list[RunRow]) -> str:
    """One line per run; an empty cell where a value is missing (e.g. test without labels)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.to_dict().items()})
    return buf.getvalue()


def summarise(plan: Plan, rows: list[RunRow]) -> list[Summary]:
    """Mean ± std per variant: an ablation's best valid AUC first (variants without a finished
    run last), a sweep's in the order of its values."""
    out = []
    for variant in plan.descriptions:
        mine = [r for r in rows if r.variant == variant]
        if not mine:
            continue
        ok = [r for r in mine if r.done]
        mean, std = {}, {}
        for key in STATS:
            values = [float(v) for r in ok if (v := getattr(r, key)) is not None]
            if values:
                mean[key] = sum(values) / len(values)
                spread = sum((v - mean[key]) ** 2 for v in values) / max(len(values) - 1, 1)
                std[key] = math.sqrt(spread)
        out.append(Summary(variant, mine[0].value, len(ok), len(mine) - len(ok), mean, std))
    if plan.kind == "sweep":
        return out
    return sorted(out, key=lambda s: -s.mean.get("valid_auc", -math.inf))


def _cell(s: Summary, key: str, digits: int) -> str:
    if key not in s.mean:
        return "—"
    if s.runs < 2:
        return f"{s.mean[key]:.{digits}f}"
    return f"{s.mean[key]:.{digits}f} ± {s.std[key]:.{digits}f}"


def markdown(
    plan: Plan,
    summaries: list[Summary],
    bucket_rows: str | None = None,
    held_note: str | None = None,
) -> str:
    """A table of mean ± std over seeds per variant, in ``summaries``' order, and a legend;
    ``held_note``: the line on the items held out of training, if any (cold.py)."""
    has_test = any("test_auc" in s.mean for s in summaries)
    columns = [("valid AUC", "valid_auc", 4), ("valid logloss", "valid_logloss", 4)]
    columns.append(("valid gAUC", "valid_gauc", 4))
    if has_test:
        columns += [("test AUC", "test_auc", 4), ("test logloss", "test_logloss", 4)]
        columns.append(("test gAUC", "test_gauc", 4))
    columns += [("best epoch", "best_epoch", 1), ("epochs", "epochs", 1)]
    columns += [("train s", "train_seconds", 0), ("train samples/s", "train_samples_per_s", 0)]
    if any("peak_rss_gb" in s.mean for s in summaries):
        columns.append(("peak RSS GB", "peak_rss_gb", 2))
    title = TITLES.get(plan.kind, f"Sweep of `{plan.param}`")
    head = ["variant", "runs", *(c[0] for c in columns), "parameters"]
    lines = [
        f"# {title}",
        "",
        "Mean ± sample std over seeds, "
        + ("in sweep order." if plan.kind == "sweep" else "sorted by valid AUC (best first)."),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|",
    ]
    if held_note:
        lines[4:4] = [held_note, ""]
    for s in summaries:
        runs = f"{s.runs}" + (f" ({s.failed} failed)" if s.failed else "")
        params = f"{round(s.mean['parameters']):,}" if "parameters" in s.mean else "—"
        cells = [f"`{s.variant}`", runs, *(_cell(s, key, d) for _, key, d in columns), params]
        lines.append("| " + " | ".join(cells) + " |")
    if not has_test:
        lines += ["", "The test split has no labels (or no file), so there are no test columns."]
    lines += _cold_start_table(summaries, bucket_rows)
    lines += ["", "## Variants", ""]
    lines += [f"- `{name}`: {text}" for name, text in plan.descriptions.items()]
    return "\n".join(lines) + "\n"


def _cold_start_table(summaries: list[Summary], bucket_rows: str | None) -> list[str]:
    """Test AUC per bucket of the target item's train occurrences, when measured."""
    if not any(c in s.mean for s in summaries for c in BUCKET_COLUMNS.values()):
        return []
    head = ["variant", *(f"{b} AUC" for b in BUCKET_COLUMNS)]
    if bucket_rows:  # the same test rows for every variant
        counts = zip(BUCKET_COLUMNS, bucket_rows.split("/"), strict=True)
        head = ["variant", *(f"{b} AUC ({int(n):,} rows)" for b, n in counts)]
    lines = [
        "",
        "## Cold start",
        "",
        "Test AUC by how often the row's target item is the target of a train row (`—`: no "
        "run had both classes in the bucket).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|",
    ]
    for s in summaries:
        cells = [f"`{s.variant}`", *(_cell(s, c, 4) for c in BUCKET_COLUMNS.values())]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_tables(
    plan: Plan, rows: list[RunRow], out_dir: Path, held_note: str | None = None
) -> list[Summary]:
    """Write results.csv and results.md into ``out_dir``; returns the summaries."""
    summaries, text = results_markdown(plan, rows, held_note)
    write_text(out_dir / "results.csv", csv_text(rows))
    write_text(out_dir / "results.md", text)
    return summaries


def results_markdown(
    plan: Plan, rows: list[RunRow], held_note: str | None = None
) -> tuple[list[Summary], str]:
    """The summaries of ``rows`` and results.md's text."""
    summaries = summarise(plan, rows)
    bucket_rows = next((r.test_bucket_rows for r in rows if r.test_bucket_rows), None)
    text = markdown(plan, summaries, bucket_rows, held_note)
    members = [f"- `{r.run}`: {r.members.replace(',', ', ')}" for r in rows if r.members]
    if members:
        text += "\n## Ensemble members (run: fitted weight)\n\n" + "\n".join(members) + "\n"
    return summaries, text
