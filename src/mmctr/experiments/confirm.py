"""``mmctr experiment confirm``: a search's best configs trained again, beside its base config.

A search (``mmctr experiment search``) ranks its trials by valid AUC on the data it ran on,
often a sample of train (``mmctr sample``) and one run a config. Confirming them means
training the best few again on the whole data, over several seeds, beside the config the
search started from, and reading the table: a trial that won by its seed's luck or by the
sample falls back. The configs are read from the search's folder: the trials' ranking from
``trials.csv`` (complete trials only, best valid AUC first), each trial's config from its run
folder's ``config.json`` (exactly what it trained), the base from ``search.json``. Nothing
here needs Optuna.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

from mmctr.config import Config
from mmctr.errors import ConfigError
from mmctr.experiments.plan import Job, Plan, check_seeds, with_seed

BASE = "base"  # the variant of the search's base config


def confirm_plan(
    search: Path,
    *,
    top: int = 3,
    seeds: int = 1,
    overrides: Sequence[str] = (),
    base: bool = True,
    quick: bool = False,
    trials: Sequence[int] = (),
) -> Plan:
    """The ``top`` best complete trials of the search in ``search`` (variants ``trial-N``),
    or the complete trials numbered ``trials`` when given, and, with ``base``, its base config,
    each x ``seeds`` seeds, ``overrides`` applied to all."""
    check_seeds(seeds)
    if top < 1:
        raise ConfigError(f"--top must be >= 1, got {top}")
    complete = _complete_trials(search)
    ranked = _chosen(complete, trials, search) if trials else complete[:top]
    configs: dict[str, Config] = {}
    descriptions: dict[str, str] = {}
    for row in ranked:
        name = f"trial-{row['trial']}"
        configs[name] = _trial_config(search, row["run"], overrides)
        descriptions[name] = (
            f"trial {row['trial']} of the search in {search} (valid AUC "
            f"{float(row['valid_auc']):.4f} there, one seed)"
        )
    if base:
        configs[BASE] = _with(_search_base(search), overrides, f"{search / 'search.json'}")
        descriptions[BASE] = f"the base config of the search in {search}"
    jobs = tuple(
        Job(name, k, with_seed(config, k, quick))
        for name, config in configs.items()
        for k in range(seeds)
    )
    return Plan("confirm", jobs, descriptions)


def _complete_trials(search: Path) -> list[dict[str, str]]:
    """The search's complete trials, best valid AUC first; ConfigError naming the file when
    there is none to confirm."""
    path = search / "trials.csv"
    if not path.is_file():
        raise ConfigError(
            f"{path}: not found; --search names the --out folder of mmctr experiment search "
            "(its trials.csv is written after each trial)"
        )
    with path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("state") == "complete"]
    for row in rows:
        if not row.get("run") or not row.get("valid_auc"):
            raise ConfigError(f"{path}: trial {row.get('trial')} lacks its run or valid_auc")
    if not rows:
        raise ConfigError(f"{path}: no complete trial to confirm yet")
    return sorted(rows, key=lambda r: -float(r["valid_auc"]))


def _chosen(
    rows: list[dict[str, str]], trials: Sequence[int], search: Path
) -> list[dict[str, str]]:
    """The rows of the trials numbered ``trials``, in that order; ConfigError naming a number
    that is no complete trial of the search."""
    by_number = {int(r["trial"]): r for r in rows}
    missing = [n for n in trials if n not in by_number]
    if missing:
        raise ConfigError(
            f"{search / 'trials.csv'}: --trials {', '.join(map(str, missing))}: no complete "
            f"trial of that number (complete: {', '.join(map(str, sorted(by_number)))})"
        )
    if len(set(trials)) != len(trials):
        raise ConfigError(f"--trials names a trial twice: {', '.join(map(str, trials))}")
    return [by_number[n] for n in trials]


def _trial_config(search: Path, run: str, overrides: Sequence[str]) -> Config:
    path = search / run / "config.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found (the trial's run folder, named in trials.csv)")
    raw = json.loads(path.read_text())
    return _with(Config.from_saved(raw, source=str(path)), overrides, str(path))


def _search_base(search: Path) -> Config:
    path = search / "search.json"
    if not path.is_file():
        raise ConfigError(f"{path}: not found; is {search} a search folder?")
    saved = json.loads(path.read_text())
    if "base" not in saved:
        raise ConfigError(f"{path}: holds no base config")
    return Config.from_saved(saved["base"], source=str(path))


def _with(config: Config, overrides: Sequence[str], where: str) -> Config:
    try:
        return config.with_overrides(list(overrides))
    except ConfigError as exc:
        raise ConfigError(f"--set on the config of {where}: {exc}") from None
