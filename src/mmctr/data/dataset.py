"""Load a whole data directory: item table, splits and the schema a model is built for."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from mmctr.config.data import DataConfig
from mmctr.data.reader import ItemTable, RowChecks, Split, read_item_table, read_split
from mmctr.data.schema import DataSchema
from mmctr.data.stream import StreamingSplit, open_streaming
from mmctr.data.vocab import infer_context_vocab
from mmctr.errors import DataError

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Dataset:
    schema: DataSchema
    items: ItemTable
    splits: dict[str, Split]
    streams: dict[str, StreamingSplit] = field(default_factory=dict)  # read as they are used
    source: Path | None = None  # the folder it was read from

    def __getitem__(self, split: str) -> Split:
        if split in self.streams:
            raise DataError(f"split {split!r} is streamed (data.streaming); it is not in memory")
        return self.splits[split]

    def rows(self, split: str) -> Split | StreamingSplit:
        """A split in memory or streamed, for training."""
        return self.streams[split] if split in self.streams else self.splits[split]


def load_dataset(
    data_dir: str | Path,
    cfg: DataConfig,
    splits: tuple[str, ...] = ("train", "valid"),
    *,
    schema: DataSchema | None = None,
    require_labels: bool = True,
    items: ItemTable | None = None,
    stream_train: bool = False,
) -> Dataset:
    """Read item_info and the given splits.

    ``items``: the folder's item table already read (e.g. by ``load_run``), so that loading one
    more split does not read and check item_info again.

    Without ``schema`` the vocabularies come from the config or are inferred from every split
    file present, so that valid and test values are in range. With ``schema`` (a trained
    model's) the data are checked against it and a mismatch raises CheckpointError.

    ``stream_train`` with ``data.streaming`` opens the train split for streaming
    (``Dataset.streams``) instead of reading it.
    """
    data_dir = Path(data_dir)
    if data_dir.exists() and not data_dir.is_dir():
        raise DataError(f"{data_dir}: not a directory; --data names the folder of parquet files")
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    for split in splits:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if items is None:
        items = read_item_table(
            data_dir,
            cfg,
            num_tags=schema.num_tags if schema else None,
            feature_vocab=schema.item_feature_vocab_sizes if schema else None,
        )
    vocab, bound = _context_vocab(data_dir, cfg, items, schema)
    checks = RowChecks(items.num_items, vocab, bound)
    loaded, streams, seq_len = _read_splits(data_dir, cfg, splits, checks, require_labels,
                                            stream_train and cfg.streaming)  # fmt: skip
    found = DataSchema(
        num_items=items.num_items,
        num_tags=items.num_tags,
        tags_per_item=int(items.tags.shape[1]),
        emb_dim=int(items.emb.shape[1]),
        seq_len=seq_len if seq_len is not None else 0,
        context_cols=tuple(cfg.context_cols),
        context_vocab_sizes=tuple(vocab),
        seq_col=cfg.seq_col,
        item_col=cfg.item_col,
        item_feature_cols=tuple(cfg.item_feature_cols),
        item_feature_vocab_sizes=items.feature_vocab_sizes,
    )
    if schema is not None:
        if not splits:
            found = replace(found, seq_len=schema.seq_len)
        schema.check_compatible(found, where=str(data_dir))
    return Dataset(schema=found, items=items, splits=loaded, streams=streams, source=data_dir)


def _read_splits(
    data_dir: Path,
    cfg: DataConfig,
    splits: tuple[str, ...],
    checks: RowChecks,
    require_labels: bool,
    stream_train: bool,
) -> tuple[dict[str, Split], dict[str, StreamingSplit], int | None]:
    """The splits read (or train opened for streaming) and their common history width."""
    loaded: dict[str, Split] = {}
    streams: dict[str, StreamingSplit] = {}
    for split in splits:  # the first split sets the history width; the others must agree
        if split == "train" and stream_train:
            streams[split] = open_streaming(data_dir, split, cfg, checks, require_labels)
            checks = replace(checks, seq_len=streams[split].seq_len)
            continue
        loaded[split] = read_split(data_dir, split, cfg, checks, require_labels=require_labels)
        checks = replace(checks, seq_len=loaded[split].seq_len)
    return loaded, streams, checks.seq_len


def _context_vocab(
    data_dir: Path, cfg: DataConfig, items: ItemTable, schema: DataSchema | None
) -> tuple[tuple[int, ...], str]:
    """The context vocabularies the splits are checked against, and where they come from.

    With a trained model's ``schema``, its item table is compared first, so that a split's ids
    are never checked against an item table the model does not use.
    """
    if schema is not None:
        item_table = replace(
            schema,
            num_items=items.num_items,
            tags_per_item=int(items.tags.shape[1]),
            emb_dim=int(items.emb.shape[1]),
            context_cols=tuple(cfg.context_cols),
            item_feature_cols=tuple(cfg.item_feature_cols),
            item_feature_vocab_sizes=items.feature_vocab_sizes,
        )
        schema.check_compatible(item_table, where=str(data_dir))
        return schema.context_vocab_sizes, "the trained model's vocabulary"
    if cfg.context_vocab_sizes:
        return cfg.context_vocab_sizes, "data.context_vocab_sizes"
    return infer_context_vocab(data_dir, cfg, list(SPLITS)), ""
