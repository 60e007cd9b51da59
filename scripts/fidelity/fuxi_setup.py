"""What both releases' oracles share: a data dir in the challenge layout described to FuxiCTR
2.3.7 (the feature columns and their vocabularies, as mmctr infers them), the copy of the data
that FuxiCTR reads, and building a release model from its parameters. No release is imported
here; each oracle passes its own model zoo."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from torch import nn

# the challenge's item_info columns: a release's loader embeds every item_info column that is
# also a feature, so mmctr's item-level likes / views levels would enter its item vectors; the
# copy it reads leaves them out
ITEM_COLS = ("item_id", "item_tags", "item_emb_d128")


def vocab_sizes(data: str) -> dict[str, int]:
    """max + 1 over item_info and every split, as mmctr infers them."""
    tags = pq.read_table(f"{data}/item_info.parquet", columns=["item_tags"])["item_tags"]
    sizes = {
        "item_id": pq.read_metadata(f"{data}/item_info.parquet").num_rows,
        "item_tags": int(np.max(tags.combine_chunks().flatten().to_numpy())) + 1,
        "likes_level": 0,
        "views_level": 0,
    }
    for split in ("train", "valid", "test"):
        table = pq.read_table(f"{data}/{split}.parquet", columns=["likes_level", "views_level"])
        for col in ("likes_level", "views_level"):
            sizes[col] = max(sizes[col], int(np.max(table[col].to_numpy())) + 1)
    return sizes


def release_data(data: str, work: str) -> str:
    """A dir a release reads: the splits linked, item_info with the challenge's columns."""
    digest = hashlib.md5(os.path.abspath(data).encode()).hexdigest()[:8]
    out = os.path.join(work, "data_" + digest)
    os.makedirs(out, exist_ok=True)
    for split in ("train", "valid", "test"):
        link = os.path.join(out, f"{split}.parquet")
        if not os.path.exists(link):
            os.symlink(os.path.abspath(f"{data}/{split}.parquet"), link)
    pq.write_table(
        pq.read_table(f"{data}/item_info.parquet", columns=list(ITEM_COLS)),
        os.path.join(out, "item_info.parquet"),
    )
    return out


def feature_cols(data: str, mm_dim: int = 128) -> list[dict[str, Any]]:
    """The challenge's dataset_config.yaml feature columns, vocabularies from ``data``;
    ``mm_dim``: the width item_emb_d128 is projected to (128 in both releases)."""
    v = vocab_sizes(data)
    cat = dict(active=True, dtype="int", type="categorical")
    return [
        dict(name="user_id", active=True, dtype="int", type="meta"),
        dict(name="item_seq", active=True, dtype="int", type="meta"),
        dict(cat, name="likes_level", vocab_size=v["likes_level"]),
        dict(cat, name="views_level", vocab_size=v["views_level"]),
        dict(cat, name="item_id", vocab_size=v["item_id"], source="item"),
        dict(name="item_tags", active=True, dtype="int", type="sequence", max_len=5,
             vocab_size=v["item_tags"], source="item"),
        dict(name="item_emb_d128", active=True, dtype="float", type="embedding",
             source="item", embedding_dim=mm_dim),
    ]  # fmt: skip


def release_params(
    base: dict[str, Any], rdata: str, work: str, seed: int, dataset_id: str, model_id: str,
    cols: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """The parameters run_expid.py would assemble: ``base`` (a release's config) on ``rdata``
    (from ``release_data``), its datasets and checkpoints under ``work``."""
    return dict(
        base,
        dataset_id=dataset_id,
        data_root=work,
        data_format="parquet",
        feature_cols=cols,
        label_col=dict(name="label", dtype="float"),
        rebuild_dataset=False,
        seed=seed,
        train_data=f"{rdata}/train.parquet",
        valid_data=f"{rdata}/valid.parquet",
        test_data=f"{rdata}/test.parquet",
        item_info=f"{rdata}/item_info.parquet",
        model_root=os.path.join(work, f"ckpt_{seed}_{os.getpid()}"),
        model_id=model_id,
    )


def build(params: dict[str, Any], model_zoo: Any) -> tuple[Any, nn.Module]:
    """The feature map and the model, as run_expid.py builds them."""
    from fuxictr.features import FeatureMap
    from fuxictr.preprocess import FeatureProcessor, build_dataset

    encoder = FeatureProcessor(**params)
    params["train_data"], params["valid_data"], params["test_data"] = build_dataset(
        encoder, **params
    )
    root = os.path.join(params["data_root"], params["dataset_id"])
    fmap = FeatureMap(params["dataset_id"], root)
    fmap.load(os.path.join(root, "feature_map.json"), params)
    model = getattr(model_zoo, params["model"])(fmap, **params)
    os.makedirs(model.model_dir, exist_ok=True)
    return fmap, model
