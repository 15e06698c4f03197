"""Per-band input normalisation that belongs to a set of encoder weights.

The network itself takes normalised tensors; the normalisation is part of the model's
configuration so that training, evaluation and scene inference all apply the same one, and a
checkpoint carries it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from dsifn._config import Config, settle
from dsifn.errors import ConfigError, InputError

__all__ = ["CAFFE_BGR", "IMAGENET_RGB", "Normalization", "check_input_bands"]


@dataclass(frozen=True)
class Normalization(Config):
    """How an image with values in [0, 1] becomes network input.

    ``out[c] = (x[src(c)] * scale - mean[c]) / std[c]`` where ``src`` reverses the band order
    when ``reverse_bands`` is set (RGB to BGR for Caffe-trained weights).
    """

    mean: tuple[float, ...]  # per input band, in units after `scale`
    std: tuple[float, ...]  # per input band, in units after `scale`
    scale: float = 1.0  # 1 for torchvision weights, 255 for Caffe-style weights
    reverse_bands: bool = False  # True: band order reversed before mean/std (RGB -> BGR)

    section: ClassVar[str] = "normalization"

    def __post_init__(self) -> None:
        """Check that mean and std have one value per band and std is positive."""
        settle(self)
        if len(self.mean) != len(self.std) or not self.mean:
            raise ConfigError(
                f"normalization mean and std need one value per band; got {len(self.mean)} "
                f"and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ConfigError(f"normalization std must be positive; got {self.std}")

    @property
    def bands(self) -> int:
        """Number of bands this normalisation is defined for."""
        return len(self.mean)

    def for_bands(self, bands: int) -> Normalization:
        """Return this normalisation repeated cyclically to ``bands`` bands.

        Used as the default for inputs with more or fewer bands than the weights were trained
        on; users with other sensors should compute their own statistics (``dsifn stats``).
        """
        if bands == self.bands:
            return self
        mean = tuple(self.mean[i % self.bands] for i in range(bands))
        std = tuple(self.std[i % self.bands] for i in range(bands))
        return Normalization(mean, std, self.scale, self.reverse_bands)

    def __call__(self, x: Tensor) -> Tensor:
        """Normalise ``x``.

        Args:
            x: Float tensor (..., C, H, W) with values in [0, 1].

        Returns:
            Tensor of the same shape and dtype.
        """
        if x.ndim < 3 or x.shape[-3] != self.bands:
            raise InputError(
                f"normalization expects {self.bands} bands in dimension -3; got shape "
                f"{tuple(x.shape)}"
            )
        if self.reverse_bands:
            x = x.flip(-3)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(-1, 1, 1)
        return (x * self.scale - mean) / std


# torchvision's ImageNet statistics (RGB in [0, 1]).
IMAGENET_RGB = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

# Keras `vgg16.preprocess_input` ("caffe" mode): BGR, 0-255, mean subtracted, no scaling.
CAFFE_BGR = Normalization(
    mean=(103.939, 116.779, 123.68), std=(1.0, 1.0, 1.0), scale=255.0, reverse_bands=True
)


def check_input_bands(in_channels: int, normalization: Normalization | None) -> None:
    """Refuse a network's band count below 1, or a normalisation of another band count.

    Raises:
        ConfigError: Naming both numbers.
    """
    if in_channels < 1:
        raise ConfigError(f"in_channels must be at least 1; got {in_channels}")
    if normalization is not None and normalization.bands != in_channels:
        raise ConfigError(
            f"normalization has {normalization.bands} bands but in_channels is {in_channels}"
        )
