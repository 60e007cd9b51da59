"""PCA over the concatenated, per-modality L2-normalised encoder outputs; no scikit-learn.

Input of the PCA, for each item: ``[l2(text) | l2(image)]`` in that order (blocks only for the
modalities in use). A modality the item lacks is a zero block; since every present block has
norm 1, each modality weighs the same whatever its width. The fitted object keeps everything
needed to put new items into the same space (``project``), and saves to one ``.npz`` file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
        """(N, D) PCA input (see ``pca_input``) -> (N, dim) float32."""
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

    def save(self, path: str | Path) -> None:
        """Write one ``.npz`` (arrays + JSON metadata), atomically."""
        meta = {
            "whiten": self.whiten,
            "modalities": [list(m) for m in self.modalities],
            "n_items": self.n_items,
            "total_variance": self.total_variance,
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                mean=self.mean,
                components=self.components,
                explained_variance=self.explained_variance,
                meta=json.dumps(meta),
            )

    @classmethod
    def load(cls, path: str | Path) -> FittedPCA:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: PCA file not found")
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                return cls(
                    mean=z["mean"],
                    components=z["components"],
                    explained_variance=z["explained_variance"],
                    total_variance=float(meta["total_variance"]),
                    whiten=bool(meta["whiten"]),
                    modalities=tuple((str(m), str(e), int(w)) for m, e, w in meta["modalities"]),
                    n_items=int(meta["n_items"]),
                )
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
    """Fit a ``dim``-component PCA to the (N, D) rows of ``x``.

    The components are the top right singular vectors of the centred data, computed as the
    eigenvectors of its D x D scatter matrix (accumulated in float64 in chunks), which is the
    same basis at O(D^2) memory instead of the O(N D) that a thin SVD needs. Signs are fixed:
    each component's entry of largest magnitude is positive (the first one on ties).

    Needs ``dim <= D`` (ConfigError) and ``dim <= N - 1`` (DataError): N centred rows span at
    most N - 1 directions, so more components would be arbitrary.
    """
    n, width = x.shape
    check_dim(dim, n, modalities)
    mean = np.zeros(width)
    for start in range(0, n, _CHUNK):
        mean += x[start : start + _CHUNK].sum(axis=0, dtype=np.float64)
    mean /= n
    scatter = np.zeros((width, width))
    for start in range(0, n, _CHUNK):
        centred = x[start : start + _CHUNK].astype(np.float64) - mean
        scatter += centred.T @ centred
    eigvals, eigvecs = np.linalg.eigh(scatter)  # ascending
    order = np.argsort(eigvals)[::-1][:dim]
    components = eigvecs[:, order].T.copy()
    peak = np.argmax(np.abs(components), axis=1)
    signs = np.sign(components[np.arange(dim), peak])
    components *= np.where(signs == 0, 1.0, signs)[:, None]
    variance = np.clip(eigvals[order], 0.0, None) / (n - 1)
    total = float(np.clip(np.trace(scatter), 0.0, None) / (n - 1))
    return FittedPCA(
        mean=mean,
        components=components,
        explained_variance=variance,
        total_variance=total,
        whiten=whiten,
        modalities=modalities,
        n_items=n,
    )
