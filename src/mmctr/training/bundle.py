"""A run's item bundle, ``RUN/items.npz``: the item table the model was trained with, so that
a run folder scores on its own, without the data folder it was trained on.

Plain numpy arrays (``np.savez``, read with ``allow_pickle=False``: nothing in it can run):

- ``tags`` (N, T) int32, ``emb`` (N, D) float32, ``features`` (N, C) int32: the data's
  item_info, row i item i (row 0 the zero padding item); C = 0 without item features;
- ``held_out`` (K,) int64: trained ids held out of training (``--held-out-items``), which
  read the zero id row, as they did in training;
- ``new_tags`` (M, T), ``new_emb`` (M, D), ``new_features`` (M, C): the items registered
  since (``mmctr items add``), ids N .. N + M - 1;
- ``pca_*``: the PCA that made the data's embeddings (``item_emb.pca.npz``, which ``mmctr
  convert`` writes beside them), when the data folder had one, so that new items' titles
  and images are embedded alike;
- ``header``: JSON: the format, the data schema's fingerprint, the item feature columns and
  every array's dtype and shape.

Training writes it as it starts (rank 0), before the first model.pt, so a run holding a model
holds its table; a resumed run keeps its registered items. ``mmctr items add`` and a
server's ``POST /v1/items`` rewrite it (registration.py: one id allocator, under the run lock).
Writes are atomic, and both writing and reading check the arrays against the run's schema:
a damaged file is a CheckpointError, never a half table.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmctr.atomic import atomic_path
from mmctr.data import DataSchema, Dataset, ItemTable
from mmctr.errors import CheckpointError, DataError
from mmctr.logs import logger
from mmctr.model import CTRModel
from mmctr.prepare.convert.emb import PCA_FILE
from mmctr.prepare.embed.pca import FittedPCA

BUNDLE_FILE = "items.npz"
FORMAT = 1
Rows = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Items as (M, T) tag ids, (M, D) frozen embeddings and (M, C) item features."""
_log = logger("training")


@dataclass(frozen=True)
class Bundle:
    """What a run scores with besides its weights."""

    items: ItemTable  # the trained items, row i item i
    held_out: np.ndarray  # (K,) int64: trained ids held out of training (zero id row)
    registered: Rows  # the items registered since training, in id order (M = 0: none)
    pca: FittedPCA | None = None  # what made the embeddings, when known

    @property
    def num_registered(self) -> int:
        return int(self.registered[0].shape[0])


def bundle_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / BUNDLE_FILE


def no_registered(schema: DataSchema) -> Rows:
    """No registered items, in the widths of ``schema``."""
    return (
        np.zeros((0, schema.tags_per_item), dtype=np.int32),
        np.zeros((0, schema.emb_dim), dtype=np.float32),
        np.zeros((0, len(schema.item_feature_cols)), dtype=np.int32),
    )


def held_out_ids(model: CTRModel) -> np.ndarray:
    """(K,) the trained ids that ``model`` reads with the zero id row (held out of training)."""
    rows = model.items.id_rows[1 : model.items.num_id_rows].cpu()
    return (torch.nonzero(rows == 0).flatten() + 1).numpy().astype(np.int64)


def write_bundle(run_dir: str | Path, schema: DataSchema, bundle: Bundle) -> Path:
    """Write ``bundle`` for a run trained on data of ``schema``, atomically."""
    path = bundle_path(run_dir)
    arrays = _arrays(bundle)
    _check(arrays, schema, str(path))
    header = {
        "format": FORMAT,
        "fingerprint": schema.fingerprint,
        "item_feature_cols": list(schema.item_feature_cols),
        "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()},
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        contents: dict[str, Any] = {"header": np.array(json.dumps(header)), **arrays}
        np.savez(fh, **contents)
    return path


def write_for_training(
    run_dir: str | Path, data: Dataset, model: CTRModel, *, resume: bool
) -> Path:
    """The bundle of a run starting (or resuming) on ``data`` with ``model``: the data's item
    table and PCA, the ids held out of training; a resumed run keeps its registered items."""
    old = read_bundle(run_dir, data.schema) if resume else None
    registered = no_registered(data.schema) if old is None else old.registered
    pca = _data_pca(data.source) or (old.pca if old is not None else None)
    bundle = Bundle(data.items, held_out_ids(model), registered, pca)
    return write_bundle(run_dir, data.schema, bundle)


def write_registered(run_dir: str | Path, schema: DataSchema, registered: Rows) -> Path:
    """Rewrite a run's bundle with ``registered``: every item registered with it, in id order
    (those registered before and the new ones)."""
    old = read_bundle(run_dir, schema)
    if old is None:
        raise CheckpointError(f"{run_dir}: holds no item bundle ({BUNDLE_FILE}) to add items to")
    return write_bundle(run_dir, schema, replace(old, registered=registered))


def read_bundle(run_dir: str | Path, schema: DataSchema) -> Bundle | None:
    """The bundle of a run whose model was trained on data of ``schema``; None when the run has
    none (written before runs kept one). CheckpointError when it is damaged or of other data."""
    path = bundle_path(run_dir)
    if not path.is_file():
        return None
    arrays, header = _read(path)
    if header.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: an item bundle of format {header.get('format')!r}; this mmctr reads {FORMAT}"
        )
    if header.get("fingerprint") != schema.fingerprint:
        raise CheckpointError(
            f"{path}: holds the item table of data of schema {header.get('fingerprint')}, but "
            f"the run's model was trained on data of schema {schema.fingerprint}"
        )
    _check(arrays, schema, str(path))
    features = arrays["features"] if schema.item_feature_cols else None
    items = ItemTable(arrays["tags"], arrays["emb"], schema.num_tags, features,
                      schema.item_feature_vocab_sizes)  # fmt: skip
    registered = (arrays["new_tags"], arrays["new_emb"], arrays["new_features"])
    pca = _bundled_pca(arrays, path)
    return Bundle(items, arrays["held_out"], registered, pca)


def _arrays(bundle: Bundle) -> dict[str, np.ndarray]:
    items, (new_tags, new_emb, new_features) = bundle.items, bundle.registered
    arrays: dict[str, np.ndarray] = {
        "tags": np.asarray(items.tags, dtype=np.int32),
        "emb": np.asarray(items.emb, dtype=np.float32),
        "features": np.asarray(items.feature_matrix, dtype=np.int32),
        "held_out": np.asarray(bundle.held_out, dtype=np.int64),
        "new_tags": np.asarray(new_tags, dtype=np.int32),
        "new_emb": np.asarray(new_emb, dtype=np.float32),
        "new_features": np.asarray(new_features, dtype=np.int32),
    }
    if bundle.pca is not None:
        arrays.update({f"pca_{k}": v for k, v in bundle.pca.arrays().items()})
    return arrays


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Every array a bundle's header declares, read whole (each checked against its CRC), and
    the header; CheckpointError for a truncated, damaged or foreign file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(str(z["header"]))
            declared = header["arrays"]
            arrays = {str(name): z[name] for name in declared}
        for name, spec in declared.items():
            got = {"dtype": arrays[name].dtype.str, "shape": list(arrays[name].shape)}
            if got != spec:
                raise ValueError(f"array {name} is {got}, its header says {spec}")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, EOFError,
            zipfile.BadZipFile) as exc:  # fmt: skip
        raise CheckpointError(
            f"{path}: cannot read the run's item bundle ({type(exc).__name__}: {exc}); the file "
            "is damaged or was not written by mmctr"
        ) from None
    return arrays, header


def _check(arrays: dict[str, np.ndarray], schema: DataSchema, where: str) -> None:
    """CheckpointError unless the arrays are the item table of data of ``schema``."""
    n, m = schema.num_items, len(arrays["new_tags"]) if "new_tags" in arrays else 0
    widths = {"tags": schema.tags_per_item, "emb": schema.emb_dim,
              "features": len(schema.item_feature_cols)}  # fmt: skip
    for name, width in widths.items():
        for key, rows in ((name, n), (f"new_{name}", m)):
            dtype = np.float32 if name == "emb" else np.int32
            got = arrays.get(key)
            if got is None or got.shape != (rows, width) or got.dtype != dtype:
                shape = None if got is None else f"{got.dtype} {got.shape}"
                raise CheckpointError(
                    f"{where}: {key} should be {np.dtype(dtype)} {(rows, width)} for the run's "
                    f"data schema {schema.fingerprint}, got {shape}"
                )
    for key in ("tags", "new_tags"):
        if arrays[key].size and not 0 <= arrays[key].min() <= arrays[key].max() < schema.num_tags:
            raise CheckpointError(f"{where}: {key} holds a tag id outside 0..{schema.num_tags - 1}")
    held = arrays.get("held_out")
    if held is None or held.ndim != 1 or held.dtype != np.int64 or ((held < 1) | (held >= n)).any():
        raise CheckpointError(f"{where}: held_out must be trained item ids 1..{n - 1}")


def _data_pca(source: Path | None) -> FittedPCA | None:
    """The PCA beside a data folder's embeddings, if it has one; a damaged one is left out."""
    path = None if source is None else source / PCA_FILE
    if path is None or not path.is_file():
        return None
    try:
        return FittedPCA.load(path)
    except DataError as exc:
        _log.warning(f"{exc}; the run's item bundle ({BUNDLE_FILE}) goes without it")
        return None


def _bundled_pca(arrays: dict[str, np.ndarray], path: Path) -> FittedPCA | None:
    saved = {k.removeprefix("pca_"): v for k, v in arrays.items() if k.startswith("pca_")}
    if not saved:
        return None
    try:
        return FittedPCA.from_arrays(saved)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: its PCA is damaged ({type(exc).__name__}: {exc})") from None
