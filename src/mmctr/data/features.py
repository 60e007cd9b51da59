"""Item features: integer attributes of each item in item_info (``data.item_feature_cols``,
e.g. its likes and views levels), which every model embeds into the item vector of the target
and of every history item. Row 0, the padding item, must hold 0 in each.

The vocabulary of each column is the trained model's, else ``data.item_feature_vocab_sizes``,
else inferred as max + 1 and refused when implausibly sparse (``vocab``).
"""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq

from mmctr.config.data import DataConfig
from mmctr.data.checks import check_range, check_type, record_batches, scalar
from mmctr.data.vocab import INT32_MAX, IdSpace
from mmctr.errors import DataError


def read_item_features(
    pf: pq.ParquetFile, cfg: DataConfig, where: str, model_vocab: tuple[int, ...] | None
) -> tuple[np.ndarray, tuple[int, ...]]:
    """The (N, C) int32 features of item_info's rows and each column's vocabulary; C = 0
    when ``data.item_feature_cols`` is empty. ``model_vocab``: a trained model's sizes."""
    cols = list(cfg.item_feature_cols)
    n = pf.metadata.num_rows
    out = np.zeros((n, len(cols)), dtype=np.int32)
    if not cols:
        return out, ()
    names = pf.schema_arrow.names
    for col in cols:
        if col not in names:
            raise DataError(
                f"{where}: missing column {col!r}, named in data.item_feature_cols (has: "
                f"{', '.join(names)}); write it per item (`mmctr convert` and `mmctr synth` do) "
                "or leave it out of data.item_feature_cols"
            )
        check_type(pf, col, "int", where)
    sizes, bound = _given_sizes(cfg, model_vocab)
    spaces = [IdSpace(col) for col in cols]
    for row0, batch in record_batches(pf, cols, where):
        for f, space in enumerate(spaces):
            values = scalar(batch.column(space.column), where, space.column, row0)
            high = sizes[f] if sizes else INT32_MAX
            check_range(values, high, where, space.column, row0, "value", bound)
            space.add(values, where, row0)
            out[row0 : row0 + len(values), f] = values
    _check_padding(out[0], cols, where)
    if sizes:
        return out, sizes
    fix = f"data.item_feature_vocab_sizes, one size for each of data.item_feature_cols: {cols}"
    return out, tuple(space.inferred_size("value", fix) for space in spaces)


def _given_sizes(
    cfg: DataConfig, model_vocab: tuple[int, ...] | None
) -> tuple[tuple[int, ...], str]:
    """The sizes to check the values against, if known before reading, and where they come
    from; empty when they are to be inferred."""
    if model_vocab is not None:
        if len(model_vocab) != len(cfg.item_feature_cols):
            raise DataError(
                f"data.item_feature_cols names {len(cfg.item_feature_cols)} columns but the "
                f"trained model has {len(model_vocab)} item features"
            )
        return tuple(model_vocab), "the trained model's vocabulary"
    if cfg.item_feature_vocab_sizes:
        return cfg.item_feature_vocab_sizes, "data.item_feature_vocab_sizes"
    return (), ""


def _check_padding(row: np.ndarray, cols: list[str], where: str) -> None:
    for f, col in enumerate(cols):
        if row[f] != 0:
            raise DataError(
                f"{where}: column {col!r} row 0: the padding item (item_id 0) must hold 0, "
                f"found {row[f]}; real items start at row 1"
            )
