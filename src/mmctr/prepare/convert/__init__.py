"""Converters: raw interaction logs (and MicroLens-50k) -> the challenge layout.

options     ConvertOptions, one field per command-line flag
core        the general converter: map ids, order each user's events, write atomically
build       split in time, levels, negatives, item files, the rows of each split, dataset.json
io          reading events/items files (csv, tsv, parquet) into arrays
levels      views_level / likes_level bins from the train period
negatives   seeded negative sampling that never picks an item the user touched
tags        #hashtag parsing and the tag vocabulary
emb         item embeddings from a file or from the embed pipeline
write       writing the layout atomically
microlens   the MicroLens-50k adapter
"""

from mmctr.prepare.convert.core import convert
from mmctr.prepare.convert.microlens import convert_microlens
from mmctr.prepare.convert.options import ConvertOptions

__all__ = ["ConvertOptions", "convert", "convert_microlens"]
