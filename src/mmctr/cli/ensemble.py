"""``mmctr ensemble``: several runs scored on the same rows, their logits combined
(``mmctr.ensemble``): the metrics of every run and of the ensemble, and a submission."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from mmctr.cli.flags import add_precision_flag, add_progress_flag
from mmctr.ensemble import EnsembleScorer, check_runs, combine, fit_weights, load_ensemble
from mmctr.errors import ConfigError, DataError
from mmctr.training.metrics import split_report
from mmctr.training.submission import write_submission


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``ensemble`` under ``sub``."""
    p = sub.add_parser("ensemble", help="score several runs on a split and combine their logits")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                   help="two or more run directories trained on the same data (item feature "
                        "columns may differ)")  # fmt: skip
    p.add_argument("--data", required=True, help="data directory in the challenge layout")
    p.add_argument("--split", default="valid", choices=["train", "valid", "test"])
    p.add_argument(
        "--weights",
        default="mean",
        choices=["mean", "fitted"],
        help="mean of the logits, or a weighted mean with weights fitted on the valid split "
        "(non-negative, summing to 1, minimising valid logloss)",
    )
    p.add_argument("--out", help="also write the ensemble's submission zip, e.g. submission.zip")
    add_precision_flag(p)
    add_progress_flag(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    runs = [Path(r) for r in args.runs]
    check_runs(runs)
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix != ".zip":
        raise ConfigError(f"--out {out}: a submission must be a .zip file")
    ensemble = load_ensemble(runs, args.data, precision=args.precision)
    rows = ensemble.split(args.split)
    if rows.labels is None and out is None:
        raise ConfigError(
            f"split {args.split} has no labels to report on: give --out to write a submission"
        )
    logits = ensemble.logits(rows, progress=bool(args.progress))
    if args.weights == "fitted":
        ensemble.weights = fit_weights(*_valid_logits(ensemble, args.split, logits, rows))
    result = report(ensemble, logits, rows.users, rows.labels, fitted=args.weights == "fitted")
    result.update(split=args.split, rows=len(rows), precision=args.precision)
    if out is not None:
        write_submission(combine(logits, ensemble.weights), out)
        result["out"] = str(out)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0


def _valid_logits(
    ensemble: EnsembleScorer, split: str, logits: np.ndarray, rows: Any
) -> tuple[np.ndarray, np.ndarray]:
    """The members' logits and labels of valid, where the weights are fitted."""
    if split != "valid":
        try:
            rows = ensemble.split("valid", require_labels=True)
        except DataError as exc:
            raise DataError(f"--weights fitted needs labels in valid: {exc}") from None
        logits = ensemble.logits(rows)
    if rows.labels is None:
        raise DataError("--weights fitted needs labels in valid, which has none")
    return logits, rows.labels


def report(
    ensemble: EnsembleScorer,
    logits: np.ndarray,
    users: np.ndarray,
    labels: np.ndarray | None,
    *,
    fitted: bool,
) -> dict[str, Any]:
    """Every run's metrics and the ensemble's (and the mean's beside fitted weights), from
    one set of logits; runs and weights alone when the split has no labels."""

    def metrics(weights: np.ndarray) -> dict[str, float]:
        if labels is None:
            return {}
        return dict(split_report(users, labels, combine(logits, weights)))

    members = np.eye(len(ensemble.runs))
    result: dict[str, Any] = {
        "weights_kind": "fitted" if fitted else "mean",
        "weights": ensemble.weights.tolist(),
        "runs": [
            {"run": str(r), **metrics(w)} for r, w in zip(ensemble.runs, members, strict=True)
        ],
        "ensemble": metrics(ensemble.weights),
    }
    if fitted:
        result["mean"] = metrics(np.full(len(ensemble.runs), 1.0 / len(ensemble.runs)))
    return result


def print_report(result: dict[str, Any]) -> None:
    def line(name: str, m: dict[str, float]) -> str:
        if "auc" not in m:
            return name
        return f"{name}  auc {m['auc']:.4f}  logloss {m['logloss']:.4f}  gauc {m['gauc']:.4f}"

    print(f"{result['split']} ({result['rows']:,} rows):")
    for entry, weight in zip(result["runs"], result["weights"], strict=True):
        print(f"  {line(entry['run'], entry)}  (weight {weight:.4f})")
    if "mean" in result:
        print(f"  {line('ensemble, mean', result['mean'])}")
    print(f"  {line('ensemble, ' + result['weights_kind'], result['ensemble'])}")
    if "out" in result:
        print(f"wrote {result['rows']:,} predictions for {result['split']} to {result['out']}")
