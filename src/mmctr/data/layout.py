"""The challenge layout as written by mmctr (synth, convert): file names and arrow schemas.

Readers are more lenient (any integer or float widths, other column names from the config);
writers produce exactly this.
"""

from __future__ import annotations

import pyarrow as pa

SPLITS = ("train", "valid", "test")
ITEM_FILE = "item_info.parquet"
META_FILE = "dataset.json"
OUTPUT_FILES = (*(f"{s}.parquet" for s in SPLITS), ITEM_FILE)

_I64 = pa.int64()
ROW_SCHEMA = pa.schema(
    {
        "user_id": _I64,
        "item_seq": pa.list_(_I64),
        "item_id": _I64,
        "likes_level": _I64,
        "views_level": _I64,
        "label": pa.float64(),
    }
)
ITEM_LEVELS = ("likes_level", "views_level")  # each item's levels: the rows' context, per item
ITEM_SCHEMA = pa.schema(
    [
        ("item_id", _I64),
        ("item_tags", pa.list_(_I64)),
        ("item_emb_d128", pa.list_(pa.float32())),
        *((name, _I64) for name in ITEM_LEVELS),
    ]
)
