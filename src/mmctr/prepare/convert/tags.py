"""Item tags for the converter: #hashtags from titles, a frequency vocabulary, a padded matrix."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from mmctr.prepare.convert.io import Items

IntArray = np.ndarray[Any, np.dtype[np.int64]]
_SPACES = re.compile(r"\s+")
# Separators that end a tag but are not part of it ("# comic, " -> "comic").
_EDGE = " \t\r\n.,;:!?\"'()[]{}<>，。！？、；：…"


def normalise_tag(tag: str) -> str:
    """Lower case, inner whitespace collapsed, edge punctuation stripped: "#  Two Yuan!" matches
    "two yuan"."""
    return _SPACES.sub(" ", tag).strip(_EDGE).lower()


def parse_hashtags(title: str | None) -> list[str]:
    """The tags of a title: each run of text after a '#' up to the next '#' or the end.

    MicroLens titles write tags with spaces ("... # Two Yuan # comic"), so a tag may hold
    several words; the text after the last '#' is taken whole, and when it is really a
    sentence it is unique to its item and falls below the vocabulary's minimum count.
    Repeats within a title count once; order of first appearance is kept.
    """
    if not title or "#" not in title:
        return []
    seen: dict[str, None] = {}
    for part in title.split("#")[1:]:
        tag = normalise_tag(part)
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


def clean_tags(tags: list[str]) -> list[str]:
    """Given tags normalised like parsed ones; repeats and empties dropped, order kept."""
    seen: dict[str, None] = {}
    for t in tags:
        tag = normalise_tag(t)
        if tag:
            seen.setdefault(tag, None)
    return list(seen)


@dataclass(frozen=True)
class TagVocab:
    """Tags used by at least ``min_count`` items; id i + 1 is ``tags[i]`` (0 is padding)."""

    tags: list[str]  # most used first; ties in alphabetical order
    item_counts: list[int]  # number of items carrying each tag
    min_count: int
    num_candidates: int  # distinct tags before the minimum count

    @property
    def num_tags(self) -> int:
        """Vocabulary size including the padding id 0."""
        return len(self.tags) + 1


def build_vocab(item_tags: list[list[str]], min_count: int) -> TagVocab:
    """Count each tag once per item, keep those on >= ``min_count`` items, number by frequency."""
    counts = Counter(t for tags in item_tags for t in tags)
    kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
    return TagVocab(kept, [counts[t] for t in kept], min_count, len(counts))


def tag_matrix(item_tags: list[list[str]], vocab: TagVocab, width: int) -> tuple[IntArray, int]:
    """(N, width) tag ids, left-padded with 0, and the number of items that had more tags.

    An item with more than ``width`` known tags keeps its ``width`` most frequent ones (lowest
    ids): widely shared tags carry signal to other items, rare ones mostly do not. Ids within a
    row ascend, so the most frequent of an item's tags sits leftmost among its real tags.
    """
    index = {t: i + 1 for i, t in enumerate(vocab.tags)}
    out = np.zeros((len(item_tags), width), dtype=np.int64)
    truncated = 0
    for row, tags in enumerate(item_tags):
        ids = sorted(index[t] for t in tags if t in index)
        if len(ids) > width:
            truncated += 1
            ids = ids[:width]
        if ids:
            out[row, width - len(ids) :] = ids
    return out, truncated


def item_tags(
    items: Items, min_count: int, width: int
) -> tuple[IntArray, TagVocab, dict[str, Any]]:
    """Tags of every item: the tags column if there is one, else the titles' #hashtags.

    Shape: -> (N, width) int64 tag ids in the order of ``items.ids``, the vocabulary, and a
    description for dataset.json.
    """
    if items.tags is not None:
        per_item, origin = [clean_tags(t) for t in items.tags], "tags column of the items file"
    elif items.titles is not None:
        per_item, origin = [parse_hashtags(t) for t in items.titles], "#hashtags of the titles"
    else:
        per_item, origin = [[] for _ in items.ids], "none (no tags or title column)"
    vocab = build_vocab(per_item, min_count)
    matrix, truncated = tag_matrix(per_item, vocab, width)
    info = {
        "source": origin,
        "normalisation": "lower case, whitespace collapsed, edge punctuation stripped",
        "min_count": f"{vocab.min_count} items",
        "vocab_size": vocab.num_tags,
        "candidates_before_min_count": vocab.num_candidates,
        "ids": "1.. by number of items carrying the tag (ties alphabetical); 0 = padding",
        "per_item": f"up to {width}, the most frequent first, left-padded with 0",
        "items_with_tags": int((matrix > 0).any(axis=1).sum()),
        "items_with_tags_cut": truncated,
        "top": vocab.tags[:20],
        "file": "tag_vocab.parquet",
    }
    return matrix, vocab, info
