"""Frozen multimodal item embeddings: encode titles and cover images, reduce them by PCA.

``embed_items`` is the one-call API; ``encode_items`` + ``reduce`` are its two halves, and
``FittedPCA.load(path).project(raw_text, raw_image)`` puts new items into a saved space. The
encoders need the optional extra ``mmctr[embed]``; nothing here downloads unless asked to.
"""

from mmctr.prepare.embed.encoders import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    Encoder,
    EncoderUnavailable,
    image_encoder,
    text_encoder,
)
from mmctr.prepare.embed.pca import FittedPCA, fit_pca, pca_input
from mmctr.prepare.embed.pipeline import (
    ModalityStats,
    RawEmbeddings,
    embed_items,
    encode_items,
    reduce,
)

__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "Encoder",
    "EncoderUnavailable",
    "FittedPCA",
    "ModalityStats",
    "RawEmbeddings",
    "embed_items",
    "encode_items",
    "fit_pca",
    "image_encoder",
    "pca_input",
    "reduce",
    "text_encoder",
]
