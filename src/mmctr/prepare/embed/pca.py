"""PCA over the concatenated, per-modality L2-normalised encoder outputs.

Input of the PCA, for each item: ``[l2(text) | l2(image)]`` in that order (blocks only for the
modalities in use). A modality the item lacks is a zero block; since every present block has
norm 1, each modality weighs the same whatever its width. The fitted object keeps everything
needed to put new items into the same space (``project``), and saves to one ``.npz`` file.

scikit-learn fits the PCA (``fit_pca``); what is kept of it is plain float64 arrays, saved
with ``np.savez`` and never pickled, and applying them (``transform``) is numpy arithmetic, so
loading a PCA file needs no scikit-learn object and reads files written before it was used.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmctr.atomic import atomic_path
from mmctr.errors import ConfigError, DataError

MODALITIES = ("text", "image")  # block order in the PCA input
_CHUNK = 65_536  # rows per float64 step (scatter, projection): bounds the transient memory


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """(N, D) rows scaled to unit norm, float32; zero rows (a missing modality) and rows with a
    non-finite value become 0."""
    x = np.asarray(x, dtype=np.float32)
    x = np.where(np.isfinite(x).all(axis=1, keepdims=True), x, np.float32(0.0))
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


def pca_input(
    modalities: tuple[tuple[str, str, int], ...], raw: dict[str, np.ndarray | None]
) -> np.ndarray:
    """Raw encoder outputs -> the (N, D) float32 PCA input ``[l2(text) | l2(image)]``.

    ``raw`` maps a modality to (N, width) raw vectors (a zero row = the item lacks it) or to
    None (every item lacks it). At least one must be an array.
    """
    used = {m for m, _, _ in modalities}
    extra = [m for m, arr in raw.items() if arr is not None and m not in used]
    if extra:
        raise DataError(f"this PCA was fitted without the {extra[0]} modality")
    sizes = {len(arr) for arr in raw.values() if arr is not None}
    if len(sizes) != 1:
        raise DataError("give raw vectors of at least one modality, with the same number of rows")
    n = sizes.pop()
    blocks = []
    for modality, encoder, width in modalities:
        arr = raw.get(modality)
        if arr is None:
            blocks.append(np.zeros((n, width), dtype=np.float32))
            continue
        if arr.ndim != 2 or arr.shape[1] != width:
            raise DataError(
                f"raw {modality} vectors have shape {arr.shape}; expected (N, {width}) from "
                f"encoder {encoder!r}"
            )
        blocks.append(l2_normalise(arr))
    return np.concatenate(blocks, axis=1)


@dataclass(frozen=True)
class FittedPCA:
    """A PCA fitted by ``fit_pca``; all arrays float64.

    ``modalities`` lists ``(modality, encoder name, raw width)`` in block order, e.g.
    ``(("text", "all-MiniLM-L6-v2", 384), ("image", "efficientnet-lite0", 1280))``.
    """

    mean: np.ndarray  # (D,) mean of the PCA input
    components: np.ndarray  # (dim, D) orthonormal rows; each row's largest |entry| is positive
    explained_variance: np.ndarray  # (dim,) variance along each component, descending
    total_variance: float  # sum of the variances of all D input columns
    whiten: bool  # divide each output column by its standard deviation
    modalities: tuple[tuple[str, str, int], ...]
    n_items: int  # rows the PCA was fitted on

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def encoders(self) -> dict[str, str]:
        """Modality -> encoder name, to encode new items the same way."""
        return {m: name for m, name, _ in self.modalities}

    @property
    def explained_variance_ratio(self) -> float:
        return (
            float(self.explained_variance.sum() / self.total_variance)
            if self.total_variance
            else 0.0
        )

    def transform(self, x: np.ndarray) -> np.ndarray:
        """(N, D) PCA input (see ``pca_input``) -> (N, dim) float32.

        The arithmetic of scikit-learn's ``PCA.transform``, in float64 chunks. Whitening
        floors a variance at 1e-12 of the top one (``_variance_floor``), where scikit-learn
        floors the standard deviation at machine epsilon; only a (numerically) zero-variance
        component, which would otherwise be amplified rounding noise, comes out differently.
        """
        out = np.empty((len(x), self.dim), dtype=np.float32)
        scale = np.sqrt(np.maximum(self.explained_variance, _variance_floor(self)))
        for start in range(0, len(x), _CHUNK):
            part = (x[start : start + _CHUNK].astype(np.float64) - self.mean) @ self.components.T
            out[start : start + _CHUNK] = part / scale if self.whiten else part
        return out

    def project(
        self, raw_text_emb: np.ndarray | None = None, raw_image_emb: np.ndarray | None = None
    ) -> np.ndarray:
        """Raw encoder outputs -> (N, dim) float32 in this PCA's space.

        ``raw_text_emb`` (N, D_text) and ``raw_image_emb`` (N, D_image) are what the recorded
        encoders (``self.encoders``) output, not normalised. A row of zeros (or with a NaN) means
        the item lacks that modality; ``None`` means every item lacks it. At least one must be
        given.
        """
        raw = {"text": raw_text_emb, "image": raw_image_emb}
        return self.transform(pca_input(self.modalities, raw))

    def arrays(self) -> dict[str, np.ndarray]:
        """What a ``.npz`` of this PCA holds: its arrays and its metadata as a JSON string
        (``save`` writes them; a run's item bundle keeps them too)."""
        meta = {
            "whiten": self.whiten,
            "modalities": [list(m) for m in self.modalities],
            "n_items": self.n_items,
            "total_variance": self.total_variance,
        }
        return {
            "mean": self.mean,
            "components": self.components,
            "explained_variance": self.explained_variance,
            "meta": np.array(json.dumps(meta)),
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> FittedPCA:
        """The PCA of ``arrays()`` (KeyError, ValueError or TypeError when they are not)."""
        meta = json.loads(str(arrays["meta"]))
        return cls(
            mean=np.asarray(arrays["mean"], dtype=np.float64),
            components=np.asarray(arrays["components"], dtype=np.float64),
            explained_variance=np.asarray(arrays["explained_variance"], dtype=np.float64),
            total_variance=float(meta["total_variance"]),
            whiten=bool(meta["whiten"]),
            modalities=tuple((str(m), str(e), int(w)) for m, e, w in meta["modalities"]),
            n_items=int(meta["n_items"]),
        )

    def save(self, path: str | Path) -> None:
        """Write one ``.npz`` (arrays + JSON metadata), atomically."""
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            arrays: dict[str, Any] = self.arrays()
            np.savez(fh, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> FittedPCA:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: PCA file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls.from_arrays(z)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a PCA file written by mmctr embed ({exc})") from None


def _variance_floor(pca: FittedPCA) -> float:
    # a component with (numerically) zero variance is all zeros in the output, not inf / nan
    top = float(pca.explained_variance[0]) if pca.dim else 0.0
    return max(top * 1e-12, 1e-30)


def check_dim(
    dim: int, n_items: int, modalities: tuple[tuple[str, str, int], ...] | None = None
) -> None:
    """``dim`` must be >= 1, <= the PCA input width (when known) and <= ``n_items`` - 1."""
    if dim < 1:
        raise ConfigError(f"--dim must be >= 1, got {dim}")
    width = sum(w for _, _, w in modalities) if modalities else None
    if width is not None and dim > width:
        assert modalities is not None
        parts = " + ".join(f"{w} {m}" for m, _, w in modalities)
        raise ConfigError(f"--dim {dim} exceeds the width of the PCA input ({width} = {parts})")
    if dim > n_items - 1:
        raise DataError(
            f"{n_items} items give at most {max(n_items - 1, 0)} PCA components, fewer than "
            f"--dim {dim}; embed more items or pass --dim {max(n_items - 1, 1)} or less"
        )


def fit_pca(
    x: np.ndarray, dim: int, *, whiten: bool, modalities: tuple[tuple[str, str, int], ...]
) -> FittedPCA:
    """Fit a ``dim``-component PCA to the (N, D) rows of ``x`` with scikit-learn.

    The ``covariance_eigh`` solver takes the eigenvectors of the D x D covariance matrix, in
    float64: exact (not randomised, which ``svd_solver="auto"`` may pick) and D x D memory on
    top of the float64 copy of ``x``, instead of the N x D of a thin SVD. Signs follow
    ``_fix_signs``. ``whiten`` is recorded for ``transform``; the fit itself does not depend
    on it.

    Needs ``dim <= D`` (ConfigError) and ``dim <= N - 1`` (DataError): N centred rows span at
    most N - 1 directions, so more components would be arbitrary.
    """
    from sklearn.decomposition import PCA  # only fitting needs it, not loading or projecting

    n, _ = x.shape
    check_dim(dim, n, modalities)
    pca = PCA(n_components=dim, whiten=whiten, svd_solver="covariance_eigh")
    pca.fit(np.asarray(x, dtype=np.float64))
    ratio = float(pca.explained_variance_ratio_.sum())
    return FittedPCA(
        mean=np.asarray(pca.mean_, dtype=np.float64),
        components=_fix_signs(np.asarray(pca.components_, dtype=np.float64)),
        explained_variance=np.asarray(pca.explained_variance_, dtype=np.float64),
        # sklearn's total: the sum of all D eigenvalues = the summed column variances (ddof 1)
        total_variance=float(pca.explained_variance_.sum()) / ratio if ratio > 0 else 0.0,
        whiten=whiten,
        modalities=modalities,
        n_items=n,
    )


def _fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each row so that its entry of largest magnitude is positive (the first on ties).

    A component's sign is arbitrary; this is the rule mmctr used before scikit-learn fitted
    its PCAs, so components, and the embeddings made from them, match the files written then.
    scikit-learn >= 1.5 flips by the same rule, but older releases decided by the left
    singular vectors; applying it here keeps the saved signs independent of the version.
    """
    rows = np.arange(len(components))
    signs = np.sign(components[rows, np.argmax(np.abs(components), axis=1)])
    return components * np.where(signs == 0, 1.0, signs)[:, None]
