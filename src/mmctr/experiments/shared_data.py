"""One read of the data for runs whose [data] sections differ only in their item features.

An experiment reads its data once for every run. The runs' [data] sections must be equal but
for ``item_feature_cols`` (and their ``item_feature_vocab_sizes``): the data is read with the
union of those columns, and each run gets a view (``item_view``) whose item table and schema
hold its own columns only, so that its model, the schema its run folder saves and the
fingerprint it is checked against are what reading with its own config would give. Each
column's vocabulary is inferred (or checked against its given size) on its own, so reading it
beside other columns changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from mmctr.config.data import DataConfig
from mmctr.data import Dataset
from mmctr.errors import ConfigError


def union_data_config(configs: Sequence[DataConfig]) -> DataConfig:
    """The [data] section to read once for all ``configs``: theirs, with every item feature
    column any of them names (in first-named order). ConfigError when they differ otherwise,
    or give a column's vocabulary size differently (or in some runs and not others)."""
    bare = {replace(c, item_feature_cols=(), item_feature_vocab_sizes=()) for c in configs}
    if len(bare) != 1:
        raise ConfigError(
            "the runs of an experiment must share one [data] section (they may differ only in "
            "data.item_feature_cols)"
        )
    cols = tuple(dict.fromkeys(col for c in configs for col in c.item_feature_cols))
    declared: dict[str, int] = {}
    for c in configs:
        for col, size in zip(c.item_feature_cols, c.item_feature_vocab_sizes, strict=False):
            if declared.setdefault(col, size) != size:
                raise ConfigError(
                    f"the runs of an experiment give data.item_feature_vocab_sizes of {col!r} "
                    f"differently ({declared[col]} and {size})"
                )
    if declared and any(c.item_feature_cols and not c.item_feature_vocab_sizes for c in configs):
        raise ConfigError(
            "give data.item_feature_vocab_sizes in every run that reads item features, or in none"
        )
    sizes = tuple(declared[col] for col in cols) if declared else ()
    return replace(bare.pop(), item_feature_cols=cols, item_feature_vocab_sizes=sizes)


def item_view(data: Dataset, cfg: DataConfig) -> Dataset:
    """``data`` (read with ``union_data_config``) as one run with data section ``cfg`` sees it:
    its item feature columns only, in its order, in the item table and the schema; the splits
    are shared, not copied."""
    cols = tuple(cfg.item_feature_cols)
    if cols == data.schema.item_feature_cols:
        return data
    have = data.schema.item_feature_cols
    index = [have.index(col) for col in cols]  # every column is in the union
    sizes = tuple(data.items.feature_vocab_sizes[i] for i in index)
    features = np.ascontiguousarray(data.items.feature_matrix[:, index]) if cols else None
    items = replace(data.items, features=features, feature_vocab_sizes=sizes)
    schema = replace(data.schema, item_feature_cols=cols, item_feature_vocab_sizes=sizes)
    return replace(data, schema=schema, items=items)
