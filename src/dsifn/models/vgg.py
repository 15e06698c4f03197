"""The VGG16 convolutional encoder that extracts DSIFN's features, and its weights.

Simonyan & Zisserman, "Very deep convolutional networks for large-scale image recognition",
ICLR 2015, configuration "D". The encoder stops at the ReLU after conv5_3: DSIFN does not use the
last max-pool. Module indices match torchvision's ``vgg16().features`` so torchvision state
dicts load by key.
"""

from __future__ import annotations

import os
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from dsifn.errors import CheckpointError, WeightsError
from dsifn.io.atomic import check_input_file, file_sha256, move_into_place
from dsifn.io.plain import load_plain
from dsifn.normalization import IMAGENET_RGB, Normalization

__all__ = [
    "VGG16_IMAGENET1K_V1",
    "VGG16Encoder",
    "WeightsRecord",
    "adapt_first_conv",
    "fetch_encoder_weights",
    "fetch_weights",
    "load_vgg16_state_dict",
    "torchvision_to_encoder",
]

# Configuration "D": convolution widths, "M" for a 2x2 max-pool. The trailing pool is left off.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip


@dataclass(frozen=True)
class WeightsRecord:
    """A published weight file: where it lives, how to check it, and what input it expects."""

    name: str  # short name users pass, e.g. "imagenet"
    url: str  # download address
    filename: str  # file name in torch.hub's checkpoint cache
    sha256_prefix: str  # leading hex digits of the file's SHA-256 (torch.hub convention)
    normalization: Normalization  # input normalisation the weights were trained with
    meta: Mapping[str, str] = field(default_factory=dict)  # source, licence, citation


# torchvision's VGG16_Weights.IMAGENET1K_V1 (acc@1 71.59 on ImageNet-1k, BSD-3 licence).
VGG16_IMAGENET1K_V1 = WeightsRecord(
    name="imagenet",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    filename="vgg16-397923af.pth",
    sha256_prefix="397923af",
    normalization=IMAGENET_RGB,
    meta={"source": "torchvision VGG16_Weights.IMAGENET1K_V1", "license": "BSD-3-Clause"},
)


class VGG16Encoder(nn.Module):
    """VGG16 encoder returning the five feature maps taken just before each max-pool.

    Attributes:
        features: ``nn.Sequential`` with torchvision's module indices (0..29).
        tap_indices: Indices in ``features`` after which a feature map is taken.
        out_channels: Channels of the five taps, finest first: (64, 128, 256, 512, 512).
        strides: Strides of the five taps: (1, 2, 4, 8, 16).
    """

    def __init__(self, in_channels: int = 3) -> None:
        """Build the encoder.

        Args:
            in_channels: Bands of the input image.
        """
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG16_LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                assert isinstance(item, int)
                layers += [
                    nn.Conv2d(channels, item, kernel_size=3, padding=1),
                    nn.ReLU(inplace=True),
                ]
                channels = item
        self.features = nn.Sequential(*layers)
        self.in_channels = in_channels
        # A tap is the output of the module just before each max-pool, plus the encoder's end.
        taps = [i - 1 for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
        self.tap_indices: tuple[int, ...] = (*taps, len(layers) - 1)
        widths: list[int] = []
        for index in self.tap_indices:
            convs = [m for m in layers[: index + 1] if isinstance(m, nn.Conv2d)]
            widths.append(convs[-1].out_channels)
        self.out_channels: tuple[int, ...] = tuple(widths)
        self.strides: tuple[int, ...] = tuple(2**i for i in range(len(widths)))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Extract the five feature maps.

        Args:
            x: (B, C, H, W) normalised image, H and W divisible by 16.

        Returns:
            Five tensors (B, out_channels[i], H / strides[i], W / strides[i]), finest first.
        """
        taps: list[Tensor] = []
        wanted = set(self.tap_indices)
        for index, module in enumerate(self.features):
            x = module(x)
            if index in wanted:
                taps.append(x)
        return taps


def adapt_first_conv(weight: Tensor, in_channels: int) -> Tensor:
    """Adapt RGB filters of a first convolution to another number of input bands.

    One band gets the sum of the RGB filters (a grey image then gives the same response as the
    RGB image it came from). More bands repeat the RGB filters cyclically and scale by 3 / C, so
    the response to an image whose bands are equal keeps its size on average (exactly when C is
    a multiple of 3); timm and segmentation_models_pytorch use the same rule.

    Args:
        weight: (O, 3, kH, kW) filters.
        in_channels: Wanted input bands C >= 1.

    Returns:
        (O, C, kH, kW) filters.
    """
    rgb = weight.shape[1]
    if in_channels == rgb:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    index = torch.arange(in_channels) % rgb
    return weight[:, index] * (rgb / in_channels)


def torchvision_to_encoder(
    state_dict: Mapping[str, Tensor], in_channels: int = 3
) -> dict[str, Tensor]:
    """Map a torchvision VGG16 state dict onto :class:`VGG16Encoder` keys.

    Keeps ``features.N.weight`` / ``features.N.bias`` of the 13 convolutions, drops the
    classifier, and adapts the first convolution to ``in_channels``.

    Args:
        state_dict: torchvision ``vgg16().state_dict()`` (or only its ``features`` part).
        in_channels: Bands of the encoder being loaded.

    Returns:
        A state dict for ``VGG16Encoder(in_channels)``.

    Raises:
        WeightsError: If convolution weights are missing.
    """
    reference = VGG16Encoder(in_channels).state_dict()
    out: dict[str, Tensor] = {}
    missing = [k for k in reference if k not in state_dict]
    if missing:
        raise WeightsError(
            f"not a VGG16 state dict: {len(missing)} encoder keys missing, e.g. {missing[0]!r}"
        )
    for key, target in reference.items():
        value = state_dict[key]
        if key == "features.0.weight":
            value = adapt_first_conv(value, in_channels)
        if value.shape != target.shape:
            raise WeightsError(
                f"VGG16 weight {key!r} has shape {tuple(value.shape)}, "
                f"expected {tuple(target.shape)}"
            )
        out[key] = value
    return out


def fetch_weights(record: WeightsRecord, *, progress: bool = True) -> Path:
    """Return the local path of a published weight file, downloading it if needed.

    The file lives in torch.hub's checkpoint cache (``$TORCH_HOME/hub/checkpoints``). A cached
    file is checked against the record's SHA-256 prefix as a downloaded one is.

    Args:
        record: Which file.
        progress: Show a download progress bar.

    Returns:
        Path of the verified file.

    Raises:
        WeightsError: If the file is absent and cannot be downloaded, or fails its hash check.
    """
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    path = cache / record.filename
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + f".{os.getpid()}.partial")
        try:
            torch.hub.download_url_to_file(
                record.url, str(partial), hash_prefix=record.sha256_prefix, progress=progress
            )
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            partial.unlink(missing_ok=True)
            raise WeightsError(
                f"{record.filename} is not in the torch.hub cache and could not be downloaded "
                f"({exc.__class__.__name__}: {exc}); fetch {record.url} elsewhere and put it at "
                f"{path}, or pass the file's path as encoder weights"
            ) from exc
        except RuntimeError as exc:  # torch.hub's hash mismatch
            partial.unlink(missing_ok=True)
            raise WeightsError(f"download of {record.url} failed its hash check: {exc}") from exc
        move_into_place(partial, path)  # synced, then renamed: never a truncated file
        return path
    digest = file_sha256(path)
    if not digest.startswith(record.sha256_prefix):
        raise WeightsError(
            f"{path} has SHA-256 {digest[:12]}..., expected a hash starting "
            f"{record.sha256_prefix}; the file is corrupted or not {record.filename}: delete it "
            "and retry"
        )
    return path


def fetch_encoder_weights(source: str | os.PathLike[str] | WeightsRecord) -> Path:
    """Return the local file behind an ``encoder_weights`` value, fetching it if needed.

    Cheap enough to call as a check before long work starts (a cached file is hashed, not
    loaded).

    Args:
        source: ``"imagenet"``, a :class:`WeightsRecord`, or a path to a ``.pth`` file.

    Returns:
        The path of the file.

    Raises:
        WeightsError: If the file is missing and cannot be fetched, or fails its hash check.
    """
    if isinstance(source, WeightsRecord):
        return fetch_weights(source)
    if source == VGG16_IMAGENET1K_V1.name:
        return fetch_weights(VGG16_IMAGENET1K_V1)
    return check_input_file(source, "encoder weights file", WeightsError)


def load_vgg16_state_dict(source: str | os.PathLike[str] | WeightsRecord) -> dict[str, Tensor]:
    """Read a torchvision-format VGG16 state dict.

    Args:
        source: ``"imagenet"``, a :class:`WeightsRecord`, or a path to a ``.pth`` file saved
            from torchvision's ``vgg16().state_dict()``.

    Returns:
        The state dict as stored (torchvision keys).

    Raises:
        WeightsError: If the file is missing, unreadable or not a state dict.
    """
    path = fetch_encoder_weights(source)
    try:
        state = load_plain(path)  # refuses junk and pickled objects in one line of ours
    except CheckpointError as exc:
        raise WeightsError(f"cannot read encoder weights: {exc}") from exc
    if not isinstance(state, Mapping):
        raise WeightsError(f"{path} does not hold a state dict (found {type(state).__name__})")
    return dict(state)
