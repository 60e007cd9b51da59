"""Data: read and validate the challenge layout, hold it as arrays, cut it into batches."""

from mmctr.config.data import DataConfig
from mmctr.data.batches import Batch, iter_batches, make_batch, num_batches, order_batches
from mmctr.data.dataset import SPLITS, Dataset, load_dataset
from mmctr.data.reader import ItemTable, Split, target_counts
from mmctr.data.schema import DataSchema
from mmctr.data.stream import Shard, StreamingSplit

__all__ = [
    "SPLITS",
    "Batch",
    "DataConfig",
    "DataSchema",
    "Dataset",
    "ItemTable",
    "Shard",
    "Split",
    "StreamingSplit",
    "iter_batches",
    "load_dataset",
    "make_batch",
    "num_batches",
    "order_batches",
    "target_counts",
]
