"""Held-out items: an experiment's cold-start setting (``--held-out-items F``).

A seeded share of the items is held out of training: the train and valid rows whose target is
one of them are dropped, and every model of the experiment marks them new
(``ItemEncoder.mark_new_items``: their id embedding is the zero padding row), so it never learns
an id for them and sees them, in histories and as targets, only through their tags and frozen
embedding, as it would see an item registered after training. The test split is kept whole, and
the experiment's train counts come from the filtered train split: the test bucket ``unseen`` holds
the rows whose target is held out (and any item no train row has as target), the other buckets
the warm rows.

The setting and the ids are saved in OUT/held_out_items.json; an OUT folder is resumed only
with the same setting.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmctr.atomic import write_json
from mmctr.data import Dataset, Split
from mmctr.errors import ConfigError
from mmctr.model import CTRModel

HELD_OUT_FILE = "held_out_items.json"
DEFAULT_SEED = 2025


@dataclass(frozen=True)
class HeldOutItems:
    """How many items to hold out of training, as a share of the items, and the draw's seed."""

    fraction: float
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if not 0 < self.fraction < 1:  # also refuses nan
            raise ConfigError(
                f"--held-out-items must be a share of the items between 0 and 1 (both "
                f"excluded), got {self.fraction}"
            )

    @property
    def flags(self) -> str:
        return f"--held-out-items {self.fraction:g} --held-out-seed {self.seed}"

    def choose(self, num_items: int) -> np.ndarray:
        """The held-out ids, sorted, among items 1 .. num_items - 1 (0 is padding)."""
        count = round((num_items - 1) * self.fraction)
        if not 0 < count < num_items - 1:
            raise ConfigError(
                f"--held-out-items {self.fraction:g} holds out {count} of the data's "
                f"{num_items - 1} items; it must hold out at least one and leave one"
            )
        rng = np.random.default_rng(self.seed)
        return np.sort(rng.choice(np.arange(1, num_items), size=count, replace=False))


def hold_out(data: Dataset, held: np.ndarray) -> Dataset:
    """``data`` without the train and valid rows whose target is held out; other splits kept."""
    splits = dict(data.splits)
    for name in ("train", "valid"):
        splits[name] = without_targets(data[name], held)
    return dataclasses.replace(data, splits=splits)


def without_targets(split: Split, held: np.ndarray) -> Split:
    return split.take(~np.isin(split.target, held))


def mark_new(model: CTRModel, new_items: np.ndarray | None) -> None:
    """Give these items the zero id row in ``model`` (nothing when None)."""
    if new_items is not None:
        model.items.mark_new_items(torch.from_numpy(new_items).long())


def record(setting: HeldOutItems, held: np.ndarray, num_items: int) -> dict[str, Any]:
    """What held_out_items.json holds."""
    return {
        "fraction": setting.fraction,
        "seed": setting.seed,
        "count": len(held),
        "num_items": num_items - 1,  # real items, padding excluded
        "ids": [int(i) for i in held],
    }


def save(out: Path, saved: dict[str, Any]) -> None:
    write_json(out / HELD_OUT_FILE, saved)


def read_saved(out: Path) -> dict[str, Any] | None:
    path = out / HELD_OUT_FILE
    if not path.exists():
        return None
    saved: dict[str, Any] = json.loads(path.read_text())
    return saved


def check_saved(out: Path, setting: HeldOutItems | None, held: np.ndarray | None = None) -> None:
    """Refuse to resume ``out`` with another held-out setting than it was started with (or,
    given ``held``, with other held-out ids: other data)."""
    saved = read_saved(out)
    if saved is None:
        runs = out / "runs"
        if setting is not None and runs.is_dir() and any(runs.iterdir()):
            raise ConfigError(
                f"{out} was started without --held-out-items; use another --out to hold items out"
            )
        return
    was = HeldOutItems(float(saved["fraction"]), int(saved["seed"]))
    if setting is None:
        raise ConfigError(
            f"{out} holds items out of training ({was.flags}); give the same flags, or use "
            "another --out"
        )
    if (was.fraction, was.seed) != (setting.fraction, setting.seed):
        raise ConfigError(
            f"{out} was started with {was.flags}, not {setting.flags}; use another --out"
        )
    if held is not None and saved["ids"] != [int(i) for i in held]:
        raise ConfigError(
            f"{out}: {setting.flags} holds out other items on this data than it did when the "
            "experiment started (other data?); use another --out"
        )


def note(saved: dict[str, Any]) -> str:
    """The line of results.md on the held-out items."""
    setting = HeldOutItems(float(saved["fraction"]), int(saved["seed"]))
    return (
        f"{saved['count']:,} of {saved['num_items']:,} items were held out of training "
        f"(`{setting.flags}`): no train or valid row has them as target and their id embedding "
        "is the zero row, so the test bucket `unseen` is their rows (with those of any item "
        "that no train row has as target) and the other buckets are the warm rows."
    )
