"""What the frozen multimodal embeddings can give the id-side of an item
(docs/beyond.md).

- Semantic IDs: residual k-means. Level 1 clusters the L2-normalised embeddings into K codes;
  each next level clusters what the previous levels' centroids leave unexplained (the
  residual). An item's L codes are coarse-to-fine names of where it sits in embedding space,
  shared by similar items, so an item seen rarely in training borrows what its neighbours
  taught the code embeddings.
- Multimodal-guided id init: the top principal components of the same embeddings, scaled to
  the id table's random init scale, so that the id table starts with similar items close.

Everything here is plain tensor arithmetic on the item table, fitted once when a run starts
(``model/item_fit.py``); nothing needs gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KMEANS_ITERATIONS = 25


def normalised(emb: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length; the zero row (padding, an item without an embedding)
    stays zero."""
    return F.normalize(emb if emb.is_floating_point() else emb.float(), dim=-1)


def _nearest(x: torch.Tensor, centroids: torch.Tensor, chunk: int = 8192) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean) of each row. (N, D), (K, D) -> (N,)."""
    c2 = centroids.pow(2).sum(-1)
    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for s in range(0, x.shape[0], chunk):
        part = x[s : s + chunk]
        # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every c of a row
        out[s : s + chunk] = (c2 - 2 * part @ centroids.T).argmin(-1)
    return out


def _plus_plus(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k-means++ seeding: each next centroid a row drawn with probability proportional to its
    squared distance to the nearest centroid so far. (N, D) -> (k, D)."""
    n = x.shape[0]
    first = int(torch.randint(n, (1,), generator=generator))
    chosen = [first]
    x2 = x.pow(2).sum(-1)

    def gap_to(row: int) -> torch.Tensor:
        return (x2 - 2 * (x @ x[row]) + x2[row]).clamp(min=0)

    gap = gap_to(first)
    for _ in range(1, k):
        total = gap.sum()
        if total <= 0:  # every row sits on a centroid: repeat rows
            pick = len(chosen) % n
        else:
            weights = (gap / total).double().cpu()
            pick = int(torch.multinomial(weights, 1, generator=generator))
        chosen.append(pick)
        gap = torch.minimum(gap, gap_to(pick))
    return x[torch.tensor(chosen, device=x.device)].clone()


def kmeans(x: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Lloyd's k-means from a k-means++ start; an emptied cluster keeps its centroid.
    (N, D) -> (k, D) centroids."""
    n = x.shape[0]
    centroids = _plus_plus(x, k, generator)
    assign = torch.full((n,), -1, dtype=torch.long, device=x.device)
    for _ in range(KMEANS_ITERATIONS):
        new = _nearest(x, centroids)
        if torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return centroids


def fit_residual_codebooks(
    emb: torch.Tensor, levels: int, codes: int, generator: torch.Generator
) -> torch.Tensor:
    """Residual k-means codebooks of the normalised rows of ``emb`` (callers pass the real
    items only). (N, D) -> (levels, codes, D)."""
    residual = normalised(emb)
    books = []
    for _ in range(levels):
        centroids = kmeans(residual, codes, generator)
        books.append(centroids)
        residual = residual - centroids[_nearest(residual, centroids)]
    return torch.stack(books)


def assign_codes(emb: torch.Tensor, books: torch.Tensor) -> torch.Tensor:
    """Each row's code at every level of ``books`` (levels, K, D). (N, D) -> (N, levels)."""
    residual = normalised(emb)
    out = torch.empty(emb.shape[0], books.shape[0], dtype=torch.long, device=emb.device)
    for level, centroids in enumerate(books):
        out[:, level] = _nearest(residual, centroids)
        residual = residual - centroids[out[:, level]]
    return out


def principal_init(emb: torch.Tensor, dim: int, std: float) -> torch.Tensor:
    """The normalised rows' coordinates on their top ``dim`` principal components, scaled to
    standard deviation ``std``; components beyond the embedding's width are zero.
    (N, D) -> (N, dim)."""
    x = normalised(emb)
    x = x - x.mean(0, keepdim=True)
    width = min(dim, x.shape[1])
    # eigenvectors of the D x D covariance, largest first (D is at most a few thousand)
    _, vectors = torch.linalg.eigh(x.T @ x)
    coords = x @ vectors[:, -width:].flip(-1)
    out = torch.zeros(x.shape[0], dim, dtype=x.dtype, device=x.device)
    out[:, :width] = coords
    spread = out[:, :width].std()
    if spread > 0:
        out *= std / spread
    return out


class SemanticIds:
    """Residual k-means in scikit-learn's shape: ``fit`` learns ``codebooks_`` (levels, K, D);
    ``transform`` gives each row's code at every level."""

    def __init__(self, *, levels: int, codes: int) -> None:
        self.levels, self.codes = levels, codes

    def fit(self, emb: torch.Tensor, generator: torch.Generator) -> SemanticIds:
        self.codebooks_ = fit_residual_codebooks(emb, self.levels, self.codes, generator)
        return self

    def transform(self, emb: torch.Tensor) -> torch.Tensor:
        return assign_codes(emb, self.codebooks_)


class PrincipalInit:
    """The id table's multimodal init: ``fit_transform`` gives each row's coordinates on the
    top ``dim`` principal components, scaled to standard deviation ``std``."""

    def __init__(self, *, dim: int, std: float) -> None:
        self.dim, self.std = dim, std

    def fit_transform(self, emb: torch.Tensor) -> torch.Tensor:
        return principal_init(emb, self.dim, self.std)
