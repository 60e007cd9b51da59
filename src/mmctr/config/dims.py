"""The sizes a model takes from its data, as plain ints: the data schema gives them
(``DataSchema.dims``) and a model is built from them, so neither needs the other's code."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DataDims:
    num_items: int  # item ids 0 .. num_items - 1; 0 is padding
    num_tags: int  # tag ids 0 .. num_tags - 1; 0 is padding
    tags_per_item: int  # T: the width of each item's left-padded tag list
    emb_dim: int  # D: the width of the frozen multimodal embedding
    context_vocab_sizes: tuple[int, ...]  # levels of each context field
    item_feature_vocab_sizes: tuple[int, ...] = ()  # levels of each item feature (item_info)
