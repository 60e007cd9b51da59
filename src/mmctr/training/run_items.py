"""Which item table a trained run scores with (``mmctr.load_run``).

A run that keeps its table (``RUN/items.npz``, bundle.py) scores with it: the table it was
trained with, its held-out ids and its registered items. A data folder given as well must be of
the run's schema (a CheckpointError naming both fingerprints otherwise); when its item_info
differs in content, a warning says so and the run's own table is used.

A run written before runs kept their table needs the data folder it was trained on: its
item_info, and the items registered in ``RUN/new_items.parquet``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmctr.config.data import DataConfig
from mmctr.data import DataSchema, ItemTable, load_dataset
from mmctr.errors import CheckpointError
from mmctr.items import NEW_ITEMS_FILE, read_new_item_features, read_new_items
from mmctr.logs import logger
from mmctr.training.bundle import BUNDLE_FILE, Bundle, Rows, no_registered, read_bundle

_log = logger("training")


def scoring_items(
    run_dir: str | Path,
    schema: DataSchema,
    cfg: DataConfig,
    data_dir: str | Path | None = None,
    items: ItemTable | None = None,
) -> Bundle:
    """The item table of a run trained on data of ``schema`` (with data section ``cfg``).

    ``data_dir``: the data folder, checked against the run's table; needed by runs without a
    bundle. ``items``: that folder's item table, already read with the run's schema.
    """
    saved = read_bundle(run_dir, schema)
    if items is None and data_dir is not None:
        items = load_dataset(data_dir, cfg, (), schema=schema).items
    if saved is None:
        if items is None:
            raise CheckpointError(
                f"{run_dir}: the run keeps no item table ({BUNDLE_FILE}): it predates runs "
                "that keep theirs, so it needs the data folder it was trained on (--data; "
                "load_run's data_dir)"
            )
        return Bundle(items, np.zeros(0, dtype=np.int64), _registered_before(run_dir, schema))
    if items is not None and not same_table(items, saved.items):
        source = data_dir if data_dir is not None else "the item table given"
        _log.warning(
            f"{source}: its item table differs from the one {run_dir} was trained with; "
            f"scoring with the run's ({BUNDLE_FILE})"
        )
    if saved.num_registered == 0:  # a run resumed into a bundle keeps its older registrations
        return Bundle(saved.items, saved.held_out, _registered_before(run_dir, schema), saved.pca)
    return saved


def registered_items(run_dir: str | Path, schema: DataSchema) -> tuple[Bundle | None, Rows]:
    """The items registered with a run as they stand on disk (those ``scoring_items`` scores
    with), and its bundle: None for a run without one, which keeps them in new_items.parquet."""
    saved = read_bundle(run_dir, schema)
    if saved is not None and saved.num_registered:
        return saved, saved.registered
    return saved, _registered_before(run_dir, schema)


def same_table(a: ItemTable, b: ItemTable) -> bool:
    """Whether two item tables hold the same tags, embeddings and item features."""
    return (
        np.array_equal(a.tags, b.tags)
        and np.array_equal(a.emb, b.emb)
        and np.array_equal(a.feature_matrix, b.feature_matrix)
    )


def _registered_before(run_dir: str | Path, schema: DataSchema) -> Rows:
    """The items of ``RUN/new_items.parquet``, where runs without a bundle kept them."""
    registered = read_new_items(run_dir)
    if registered is None:
        return no_registered(schema)
    ids, tags, emb = registered
    first = schema.num_items
    if not np.array_equal(ids, np.arange(first, first + len(ids))):
        raise CheckpointError(f"{run_dir}: {NEW_ITEMS_FILE} does not follow the run's items")
    features = read_new_item_features(run_dir, schema.item_feature_cols)
    assert features is not None  # the file exists
    return tags, emb, features
