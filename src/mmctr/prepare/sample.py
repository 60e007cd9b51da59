"""A smaller data set in the challenge layout, for quick iteration (``mmctr sample``).

train keeps whole groups: a group is a maximal run of consecutive rows with the same user and
the same history (one positive and its sampled negatives), drawn with probability F. valid
keeps every row of N users chosen without replacement. test and item_info are the source's
files, hard-linked. The draws are fixed by the seed and are exactly

    u = numpy.random.default_rng(S).random(num_train_groups)   # keep group g iff u[g] < F
    numpy.random.default_rng(S).choice(numpy.unique(valid users), size=N, replace=False)

so that a sample made by hand with the same recipe is reproduced row for row.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mmctr.config.data import DataConfig
from mmctr.data.checks import check_not_null, check_type, open_parquet
from mmctr.data.layout import META_FILE, OUTPUT_FILES
from mmctr.errors import ConfigError, DataError
from mmctr.prepare.convert.write import check_target, place

BATCH_ROWS = 65_536  # rows read at a time: bounds memory on 3.6M-row files with 100-long histories
Array = np.ndarray[Any, Any]


class _GroupDraws:
    """Streams train rows batch by batch and gives each row its group's uniform draw.

    A group may span two batches, so the last row of a batch (user, history, draw) is carried
    to the next. Drawing ``k`` values per batch from one generator yields the same numbers as
    one ``random(num_groups)`` call, because each double consumes exactly one 64-bit output.
    """

    def __init__(self, seed: int, where: str, user_col: str, seq_col: str) -> None:
        self.rng = np.random.default_rng(seed)
        self.where, self.user_col, self.seq_col = where, user_col, seq_col
        self.groups = 0
        self.last: tuple[Any, Array, float] | None = None  # (user, history, draw) of the last row

    def draws(self, users: pa.Array, seqs: pa.Array, row0: int) -> tuple[Array, Array]:
        """(n,) draw of each row's group (rows of a group share one), (k,) draws of new groups.

        ``row0`` is the file row of the batch's first row, for error messages.
        """
        check_not_null(users, self.where, self.user_col, row0, "value is null")
        check_not_null(seqs, self.where, self.seq_col, row0, "value is null")
        user = users.to_numpy(zero_copy_only=False)
        lengths = pc.list_value_length(seqs).to_numpy(zero_copy_only=False).astype(np.int64)
        flat_arr = pc.list_flatten(seqs)
        if flat_arr.null_count:
            # a null inside a history would compare unequal to itself and split a group
            offsets = np.cumsum(lengths)
            first = int(np.flatnonzero(flat_arr.is_null().to_numpy(zero_copy_only=False))[0])
            row = int(np.searchsorted(offsets, first, side="right"))
            raise DataError(
                f"{self.where}: column {self.seq_col!r} row {row0 + row}: list holds a null"
            )
        flat = flat_arr.to_numpy(zero_copy_only=False)
        starts = np.cumsum(lengths) - lengths
        same = np.zeros(len(user), dtype=bool)  # row i continues the group of row i - 1
        same[1:] = (user[1:] == user[:-1]) & _same_lists(flat, starts, lengths)
        if self.last is not None:
            last_user, last_seq, _ = self.last
            same[0] = bool(user[0] == last_user) and np.array_equal(
                flat[starts[0] : starts[0] + lengths[0]], last_seq
            )
        new = ~same
        fresh = self.rng.random(int(new.sum()))
        self.groups += len(fresh)
        carried = self.last[2] if self.last is not None else np.nan  # row 0 is new when None
        # index 0 = the group carried over from the previous batch, k = the k-th new group
        per_row = np.r_[carried, fresh][np.cumsum(new)]
        end = len(user) - 1
        last_seq = flat[starts[end] : starts[end] + lengths[end]].copy()
        self.last = (user[end], last_seq, float(per_row[end]))
        return per_row, fresh


def _same_lists(flat: Array, starts: Array, lengths: Array) -> Array:
    """(n - 1,) bool: list i + 1 equals list i, for n lists stored as slices of ``flat``."""
    n = len(lengths)
    if n < 2:
        return np.zeros(0, dtype=bool)
    width = int(lengths[0])
    if (lengths == width).all():  # the layout's fixed-length histories: one matrix compare
        matrix = flat.reshape(n, width)
        return np.asarray((matrix[1:] == matrix[:-1]).all(axis=1))
    # ragged lists: compare element by element only the pairs of equal length
    cand = np.flatnonzero(lengths[1:] == lengths[:-1]) + 1  # (m,) rows compared to row - 1
    size = lengths[cand]
    pos = np.arange(int(size.sum())) - np.repeat(np.cumsum(size) - size, size)
    owner = np.repeat(np.arange(len(cand)), size)
    differs = flat[starts[cand][owner] + pos] != flat[starts[cand - 1][owner] + pos]
    out = np.zeros(n - 1, dtype=bool)
    out[cand - 1] = np.bincount(owner, weights=differs, minlength=len(cand)) == 0
    return out


def _check_options(train_fraction: float, valid_users: int) -> None:
    if not 0.0 < train_fraction <= 1.0:  # written so that NaN fails too
        raise ConfigError(
            f"--train-fraction {train_fraction}: must be in (0, 1], the share of train groups "
            "to keep"
        )
    if valid_users < 1:
        raise ConfigError(f"--valid-users {valid_users}: must be >= 1")


def _check_target(data: Path, out: Path, force: bool) -> None:
    if out.resolve() == data.resolve():
        raise DataError(f"{out} is the source folder; write the sample into another folder")
    check_target(out, (*OUTPUT_FILES, META_FILE), force, flag="OUT")


def _open_inputs(data: Path, cfg: DataConfig) -> dict[str, pq.ParquetFile]:
    """Every input file, checked to exist and to hold the columns the sampling reads."""
    if not data.is_dir():
        raise DataError(f"data directory not found: {data}")
    keyed = [cfg.user_col, cfg.seq_col]
    files: dict[str, pq.ParquetFile] = {}
    for split in ("train", "valid"):
        path = data / cfg.split_file(split)
        pf = open_parquet(path, keyed)
        check_type(pf, cfg.user_col, "int", path.name)
        check_type(pf, cfg.seq_col, "int list", path.name)
        files[split] = pf
    # test and item_info are linked, not read: that they are parquet files is enough here
    files["test"] = open_parquet(data / cfg.test_file, [])
    files["item"] = open_parquet(data / cfg.item_file, [])
    return files


def _choose_users(pf: pq.ParquetFile, cfg: DataConfig, count: int, seed: int) -> tuple[Array, int]:
    """(R,) bool mask of the valid rows of ``count`` seeded users; distinct users in valid."""
    column = pf.read(columns=[cfg.user_col]).column(cfg.user_col).combine_chunks()
    check_not_null(column, cfg.valid_file, cfg.user_col, 0, "value is null")
    user = column.to_numpy(zero_copy_only=False)
    users = np.unique(user)  # sorted: the order the draw indexes into
    if count > len(users):
        raise DataError(
            f"--valid-users {count}: {cfg.valid_file} has only {len(users):,} distinct users "
            f"(column {cfg.user_col!r})"
        )
    chosen = np.random.default_rng(seed).choice(users, size=count, replace=False)
    return np.isin(user, chosen), len(users)


def _write_train(
    pf: pq.ParquetFile, path: Path, cfg: DataConfig, fraction: float, seed: int
) -> dict[str, int]:
    """Stream train into ``path``, keeping the rows of groups whose draw is below ``fraction``."""
    groups = _GroupDraws(seed, cfg.train_file, cfg.user_col, cfg.seq_col)
    rows = groups_kept = row0 = 0
    with pq.ParquetWriter(path, pf.schema_arrow, compression="zstd") as writer:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            if batch.num_rows == 0:  # an empty row group: no row to carry a group over
                continue
            per_row, fresh = groups.draws(
                batch.column(cfg.user_col), batch.column(cfg.seq_col), row0
            )
            groups_kept += int((fresh < fraction).sum())
            row0 += batch.num_rows
            keep = per_row < fraction
            if keep.any():
                writer.write_table(pa.Table.from_batches([batch]).filter(pa.array(keep)))
                rows += int(keep.sum())
    return {"rows": rows, "groups": groups.groups, "groups_kept": groups_kept}


def _write_rows(pf: pq.ParquetFile, path: Path, keep: Array) -> int:
    """Stream ``pf`` into ``path`` keeping the rows where ``keep`` (R,) is True; rows kept."""
    row0 = 0
    with pq.ParquetWriter(path, pf.schema_arrow, compression="zstd") as writer:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            part = keep[row0 : row0 + batch.num_rows]
            row0 += batch.num_rows
            if part.any():
                writer.write_table(pa.Table.from_batches([batch]).filter(pa.array(part)))
    return int(keep.sum())


def _write_files(
    tmp: Path,
    data: Path,
    files: dict[str, pq.ParquetFile],
    cfg: DataConfig,
    fraction: float,
    valid_keep: Array,
    seed: int,
) -> tuple[dict[str, int], int, dict[str, str]]:
    """Write the sample's train and valid into ``tmp`` and share test and item_info there.

    Returns train's counts, the valid rows kept, and how each shared file got there.
    """
    train = _write_train(files["train"], tmp / cfg.train_file, cfg, fraction, seed)
    if train["rows"] == 0:
        raise DataError(
            f"--train-fraction {fraction} kept none of the {train['groups']:,} "
            "train groups; raise it or try another --seed"
        )
    valid_rows = _write_rows(files["valid"], tmp / cfg.valid_file, valid_keep)
    shared = {n: _link_or_copy(data / n, tmp / n) for n in (cfg.test_file, cfg.item_file)}
    return train, valid_rows, shared


def _link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link ``src`` to ``dst`` (no extra space); copy where links are impossible."""
    try:
        os.link(src, dst)
        return "linked"
    except OSError:  # another filesystem, or one without hard links
        shutil.copyfile(src, dst)
        return "copied"


METHOD = {
    "train": "groups = maximal runs of rows with the same user and item_seq; keep group g iff "
    "default_rng(seed).random(num_groups)[g] < train_fraction",
    "valid": "the rows of default_rng(seed).choice(sorted unique users, valid_users, "
    "replace=False)",
    "test, item_info": "the source's files, hard-linked (copied across filesystems)",
}


def sample_dataset(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    train_fraction: float,
    valid_users: int,
    seed: int,
    overwrite: bool = False,
    cfg: DataConfig | None = None,
) -> dict[str, Any]:
    """Write the sample of ``data_dir`` into ``out_dir``; returns the content of its dataset.json.

    Nothing appears in ``out_dir`` unless every file is complete; an existing data set there is
    replaced only with ``overwrite``. Bad options or input raise ConfigError / DataError before
    anything is written.
    """
    t0 = time.perf_counter()
    cfg = cfg or DataConfig()
    data, out = Path(data_dir), Path(out_dir)
    _check_options(train_fraction, valid_users)
    _check_target(data, out, overwrite)
    files = _open_inputs(data, cfg)
    try:
        valid_keep, num_valid_users = _choose_users(files["valid"], cfg, valid_users, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.sample-", dir=out.parent))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 would otherwise become the sample's mode
            train, valid_rows, shared = _write_files(
                tmp, data, files, cfg, train_fraction, valid_keep, seed
            )
            meta: dict[str, Any] = {
                "format": "mmctr sample",
                "source": str(data.resolve()),
                "train_fraction": train_fraction,
                "valid_users": valid_users,
                "seed": seed,
                "rows": {
                    "train": train["rows"],
                    "valid": valid_rows,
                    "test": files["test"].metadata.num_rows,
                },
                "source_rows": {s: files[s].metadata.num_rows for s in ("train", "valid", "test")},
                "train_groups": {"kept": train["groups_kept"], "total": train["groups"]},
                "valid_users_total": num_valid_users,
                "shared_files": shared,
                "method": METHOD,
                "seconds": round(time.perf_counter() - t0, 2),
            }
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
            place(tmp, out, (*OUTPUT_FILES, META_FILE))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        for pf in files.values():
            pf.close()
    return meta
