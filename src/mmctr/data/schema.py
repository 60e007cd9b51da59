"""What a trained model assumes about its data: sizes, vocabularies and column names."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from mmctr.config.dims import DataDims
from mmctr.errors import CheckpointError

ITEM_FEATURES = ("item_feature_cols", "item_feature_vocab_sizes")
_OPTIONAL = ITEM_FEATURES  # to_dict omits them when empty


@dataclass(frozen=True)
class DataSchema:
    num_items: int  # rows of item_info, padding row 0 included
    num_tags: int  # tag vocabulary, padding 0 included
    tags_per_item: int
    emb_dim: int  # width of the frozen multimodal embedding
    seq_len: int  # stored history length of every row
    context_cols: tuple[str, ...]
    context_vocab_sizes: tuple[int, ...]
    seq_col: str = "item_seq"
    item_col: str = "item_id"
    # integer item attributes in item_info (data.item_feature_cols) and their vocabularies;
    # empty = none, and then left out of ``to_dict`` so that older schemas keep their fingerprint
    item_feature_cols: tuple[str, ...] = ()
    item_feature_vocab_sizes: tuple[int, ...] = ()

    @property
    def dims(self) -> DataDims:
        """The sizes a model is built from."""
        return DataDims(
            num_items=self.num_items,
            num_tags=self.num_tags,
            tags_per_item=self.tags_per_item,
            emb_dim=self.emb_dim,
            context_vocab_sizes=self.context_vocab_sizes,
            item_feature_vocab_sizes=self.item_feature_vocab_sizes,
        )

    @property
    def fingerprint(self) -> str:
        """A short hash that changes whenever anything the model depends on changes."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["context_cols"] = list(self.context_cols)
        out["context_vocab_sizes"] = list(self.context_vocab_sizes)
        for key in _OPTIONAL:
            if out[key]:
                out[key] = list(out[key])
            else:
                del out[key]  # a schema without item features hashes as it did before them
        return out

    def with_item_features(self, cols: tuple[str, ...], sizes: tuple[int, ...]) -> DataSchema:
        """The same data read with other item feature columns (their vocabulary sizes)."""
        return replace(self, item_feature_cols=tuple(cols), item_feature_vocab_sizes=tuple(sizes))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DataSchema:
        tuples = ("context_cols", "context_vocab_sizes", *_OPTIONAL)
        fields: dict[str, Any] = {**raw, **{key: tuple(raw.get(key, ())) for key in tuples}}
        return cls(**fields)

    def check_compatible(self, other: DataSchema, *, where: str) -> None:
        """Raise CheckpointError naming every field in which ``other`` (the data) differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        keys = [*mine, *(k for k in theirs if k not in mine)]
        diffs = [
            f"{k}: model {mine.get(k, [])!r} vs data {theirs.get(k, [])!r}"
            for k in keys
            if mine.get(k) != theirs.get(k)
        ]
        if diffs:
            raise CheckpointError(
                f"{where}: the data's schema (fingerprint {other.fingerprint}) does not match the "
                f"one the model was trained on (fingerprint {self.fingerprint}): "
                + "; ".join(diffs)
            )


def select_item_features(
    features: np.ndarray, given: tuple[str, ...], wanted: tuple[str, ...]
) -> np.ndarray:
    """The (M, len(wanted)) columns ``wanted`` of (M, len(given)) item features whose columns
    are ``given`` (each wanted column is one of them): what one member of an ensemble whose
    members read different item feature columns gets."""
    index = [given.index(col) for col in wanted]
    return features[:, index]
