"""The ensemble rows of a peers experiment: trained runs combined, nothing trained.

Once every run of the plan has a row, the two single variants with the best mean valid AUC
(over their finished runs) are chosen; for seed k, their k-th runs are scored on valid and
test, and their logits combined by ``mmctr.ensemble``'s ``fit_weights`` (non-negative weights
summing to 1 fitted on valid) and ``combine``. The row is written to
OUT/runs/ensemble-seed<k>/result.json with its members and weights; a rerun reads it back as
long as the chosen members are the same.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmctr.api import load_run
from mmctr.atomic import write_json, write_text
from mmctr.ensemble import combine, fit_weights
from mmctr.experiments import cold
from mmctr.experiments.peers import ENSEMBLE
from mmctr.experiments.plan import Job, Plan
from mmctr.experiments.report import summarise
from mmctr.experiments.rows import METRICS, RunRow
from mmctr.experiments.runner import RESULT_FILE, ExperimentData, Log, fill_test
from mmctr.training.metrics import split_report


def best_two(plan: Plan, rows: list[RunRow]) -> list[str]:
    """The two single variants with the best mean valid AUC (fewer when fewer finished)."""
    singles = [r for r in rows if r.variant != ENSEMBLE]
    ranked = [s.variant for s in summarise(plan, singles) if "valid_auc" in s.mean]
    return ranked[:2]


def ensemble_rows(
    plan: Plan, rows: list[RunRow], out: Path, data: Callable[[], ExperimentData], log: Log
) -> list[RunRow]:
    """An ensemble row a seed (``plan.ensemble_seeds``), computed or read back; ``data`` gives
    the experiment's data when a row needs computing."""
    variants = best_two(plan, rows)
    if len(variants) < 2:
        log("ensemble: fewer than two variants finished; no ensemble rows")
        return []
    log(f"ensemble: the two best variants by mean valid AUC are {variants[0]} and {variants[1]}")
    by_run = {r.run: r for r in rows}
    made = []
    for k in range(plan.ensemble_seeds):
        members = [j for v in variants for j in plan.jobs if j.variant == v and j.seed_index == k]
        made.append(_row(k, members, by_run, out, data, log))
    return made


def _row(
    k: int,
    members: list[Job],
    by_run: dict[str, RunRow],
    out: Path,
    data: Callable[[], ExperimentData],
    log: Log,
) -> RunRow:
    name = f"{ENSEMBLE}-seed{k}"
    folder = out / "runs" / name
    saved = folder / RESULT_FILE
    names = [j.name for j in members]
    if saved.exists():
        row = RunRow.from_dict(json.loads(saved.read_text()))
        if [m.split(":")[0] for m in (row.members or "").split(",")] == names:
            return row
    row = RunRow(ENSEMBLE, "", members[0].config.train.seed, name)
    t0 = time.perf_counter()
    failed = [n for n in names if not (n in by_run and by_run[n].done)]
    try:
        if failed:
            raise RuntimeError(f"member run {failed[0]} did not finish")
        _fill(row, members, [by_run[n] for n in names], out, data())
    except Exception as exc:  # recorded like a failed run; the other rows stand
        folder.mkdir(parents=True, exist_ok=True)
        write_text(folder / "error.log", traceback.format_exc())
        row.status, row.error = "failed", " ".join(f"{type(exc).__name__}: {exc}".split())
        log(f"{name}: FAILED: {row.error}")
        return row
    row.status, row.wall_seconds = "done", round(time.perf_counter() - t0, 2)
    (folder / "error.log").unlink(missing_ok=True)
    write_json(saved, row.to_dict())
    test = "" if row.test_auc is None else f", test auc {row.test_auc:.4f}"
    log(f"{name}: {row.members}: valid auc {row.valid_auc:.4f}{test}")
    return row


def _fill(
    row: RunRow, members: list[Job], rows: list[RunRow], out: Path, exp: ExperimentData
) -> None:
    """Score the members on valid (and test), fit the weights on valid, fill ``row``."""
    valid = exp.data["valid"]
    assert valid.labels is not None
    splits = [valid] if exp.test is None else [valid, exp.test]
    logits = [np.empty((len(s), len(members))) for s in splits]
    for i, job in enumerate(members):
        scorer = load_run(out / "runs" / job.name, exp.data_dir,
                          items=exp.for_job(job.config).items)  # fmt: skip
        cold.mark_new(scorer.model, exp.new_items)  # as the member was trained and scored
        for split, z in zip(splits, logits, strict=True):
            z[:, i] = scorer.predict(split, logits=True)
    weights = fit_weights(logits[0], valid.labels)
    report = split_report(valid.users, valid.labels, combine(logits[0], weights))
    row.valid_auc, row.valid_logloss, row.valid_gauc = (report[k] for k in METRICS)
    if exp.test is not None:
        fill_test(row, combine(logits[1], weights), exp)
    row.members = ",".join(f"{j.name}:{w:.6f}" for j, w in zip(members, weights, strict=True))
    row.parameters = sum(r.parameters or 0 for r in rows)
    row.train_seconds = round(sum(r.train_seconds or 0.0 for r in rows), 2)
