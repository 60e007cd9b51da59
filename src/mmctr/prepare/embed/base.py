"""What every encoder module shares: the Encoder protocol, default names and load errors.

This module imports nothing from the rest of ``mmctr.prepare.embed``, so ``encoders`` (the
factories) and the concrete ``text`` and ``image`` encoders can all depend on it without
importing each other back.
"""

from __future__ import annotations

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
