"""The explicit fitting step of the item-side switches, apart from the module that applies it.

Semantic IDs need residual k-means codebooks of the frozen embeddings, and the multimodal id
init the embeddings' principal components; both are fitted once, on the items with a learned
id, when a run starts (``training/run.py``), with a generator of their own seeded from the
run's seed, so that the global random stream is left alone. ``ItemEncoder.apply_fit`` takes the
result; a trained model carries it in its state dict and is never refitted.
"""

from __future__ import annotations

import torch

from mmctr.model.item import EMBEDDING_INIT_STD, ItemEncoder
from mmctr.model.semantic import PrincipalInit, SemanticIds


@torch.no_grad()
def fit_items(encoder: ItemEncoder, *, seed: int) -> bool:
    """Fit what the encoder's switches take from its loaded item table; returns whether there
    was anything to fit (False when both switches are off)."""
    if not encoder.needs_fit:
        return False
    known = encoder.trained_item_embeddings()
    generator = torch.Generator().manual_seed(seed)
    codebooks = None
    if encoder.sid_emb is not None:
        levels, codes, _ = encoder.sid_books.shape
        codebooks = SemanticIds(levels=levels, codes=codes).fit(known, generator).codebooks_
    id_init = None
    if encoder.id_init == "mm":
        width = encoder.id_emb.embedding_dim
        id_init = PrincipalInit(dim=width, std=EMBEDDING_INIT_STD).fit_transform(known)
    encoder.apply_fit(codebooks=codebooks, id_init=id_init)
    return True
