"""A disk cache of raw encoder outputs, one ``.npz`` file per (modality, encoder).

Entries are keyed by item id and encoder name, and carry a 64-bit fingerprint of the input
(the text itself; for an image its resolved path, size and modification time), so an item whose
title or cover changed is encoded again instead of served stale. Files are rewritten whole and
atomically: a reader sees the old cache or the new one, and an interrupted run keeps what was
flushed before it stopped.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from pathlib import Path

import numpy as np

from mmctr.atomic import atomic_path

CACHE_VERSION = 1


def fingerprint(text: str) -> int:
    """A stable 64-bit digest of a string (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def cache_file(directory: Path, modality: str, encoder_name: str) -> Path:
    """``<dir>/<modality>-<readable slug>-<hash>.npz``: the hash keeps distinct names apart."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", encoder_name).strip("-.")[-60:] or "encoder"
    digest = hashlib.blake2b(encoder_name.encode("utf-8"), digest_size=4).hexdigest()
    return directory / f"{modality}-{slug}-{digest}.npz"


class EncodingCache:
    """Raw vectors of one encoder. ``directory=None`` gives a cache that holds nothing.

    Held in memory sorted by id; ``add`` collects new rows and ``flush`` merges them into the
    file (new rows replace old rows with the same id).
    """

    def __init__(self, directory: str | Path | None, modality: str, encoder_name: str) -> None:
        self.encoder_name = encoder_name
        self.path = (
            None if directory is None else cache_file(Path(directory), modality, encoder_name)
        )
        self._ids = np.empty(0, dtype=np.int64)
        self._keys = np.empty(0, dtype=np.uint64)
        self._vectors: np.ndarray | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        if self.path is not None and self.path.is_file():
            self._read(self.path)

    @property
    def dim(self) -> int | None:
        return None if self._vectors is None else int(self._vectors.shape[1])

    def __len__(self) -> int:
        return int(self._ids.shape[0])

    def _read(self, path: Path) -> None:
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                ids, keys, vectors = z["ids"], z["keys"], z["vectors"]
        except (OSError, ValueError, KeyError) as exc:
            warnings.warn(f"ignoring unreadable embedding cache {path} ({exc})", stacklevel=3)
            return
        if meta.get("version") != CACHE_VERSION or meta.get("encoder") != self.encoder_name:
            warnings.warn(f"ignoring embedding cache {path}: written for {meta}", stacklevel=3)
            return
        self._ids, self._keys, self._vectors = ids, keys, vectors

    def lookup(self, ids: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(hit mask (N,) bool, row of each hit in ``vectors``) for ids with matching keys."""
        if not len(self):
            return np.zeros(len(ids), dtype=bool), np.zeros(len(ids), dtype=np.int64)
        rows = np.minimum(np.searchsorted(self._ids, ids), len(self) - 1)
        hit = (self._ids[rows] == ids) & (self._keys[rows] == keys)
        return hit, rows

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        assert self._vectors is not None
        return self._vectors[rows]

    def add(self, ids: np.ndarray, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Queue rows for the next ``flush``; ids must be unique within one run."""
        if self.path is not None and len(ids):
            self._pending.append((ids, keys, np.asarray(vectors, dtype=np.float32)))

    def flush(self) -> None:
        """Merge the queued rows and rewrite the file atomically (no-op when nothing is queued)."""
        if self.path is None or not self._pending:
            return
        new_ids = np.concatenate([p[0] for p in self._pending]).astype(np.int64)
        new_keys = np.concatenate([p[1] for p in self._pending]).astype(np.uint64)
        new_vectors = np.concatenate([p[2] for p in self._pending])
        self._pending.clear()
        if self._vectors is not None and self._vectors.shape[1] != new_vectors.shape[1]:
            warnings.warn(
                f"embedding cache {self.path} held {self._vectors.shape[1]}-d vectors but "
                f"{self.encoder_name!r} now gives {new_vectors.shape[1]}-d; replacing it",
                stacklevel=2,
            )
            self._ids, self._keys, self._vectors = self._ids[:0], self._keys[:0], None
        keep = ~np.isin(self._ids, new_ids)
        ids = np.concatenate([self._ids[keep], new_ids])
        keys = np.concatenate([self._keys[keep], new_keys])
        vectors = (
            new_vectors
            if self._vectors is None
            else np.concatenate([self._vectors[keep], new_vectors])
        )
        order = np.argsort(ids, kind="stable")
        self._ids, self._keys, self._vectors = ids[order], keys[order], vectors[order]
        meta = {"version": CACHE_VERSION, "encoder": self.encoder_name}
        with atomic_path(self.path) as tmp, open(tmp, "wb") as fh:
            # through a handle: np.savez would append ".npz" to the temporary name
            np.savez(
                fh, ids=self._ids, keys=self._keys, vectors=self._vectors, meta=json.dumps(meta)
            )
