"""Training-time augmentation of change samples, drawn from an explicit random generator.

Every function takes a :class:`torch.Generator`, so a sample's augmentation is a pure function
of the generator's seed: :func:`sample_generator` derives it from (seed, epoch, index), which
makes results independent of the number of data-loading workers and lets a resumed run replay
the same augmentations.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dsifn.data.config import AugmentConfig

__all__ = [
    "augment_sample",
    "hue_rotation_matrix",
    "joint_transform",
    "photometric",
    "random_crop",
    "sample_generator",
]


def sample_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A CPU generator seeded from (seed, epoch, index) only.

    ``numpy``'s ``SeedSequence`` mixes the three numbers so that neighbouring indices or epochs
    get unrelated streams.
    """
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    generator = torch.Generator()
    generator.manual_seed(int(state[0]) << 32 | int(state[1]))
    return generator


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _chance(generator: torch.Generator, probability: float) -> bool:
    return probability > 0 and float(torch.rand((), generator=generator)) < probability


def random_crop(
    image: Tensor, mask: Tensor, valid: Tensor, size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Cut the same random ``size`` x ``size`` window from image, mask and valid.

    A side shorter than ``size`` is padded at the bottom / right with zeros that are marked
    not valid, so every crop has the requested size.

    Args:
        image: (T, C, H, W) dates stacked.
        mask: (1, H, W).
        valid: (1, H, W) bool.
        size: Side of the crop.
        generator: Source of the window position.

    Returns:
        The three tensors cut to (..., size, size).
    """
    height, width = image.shape[-2:]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
        mask = F.pad(mask, (0, pad_w, 0, pad_h))
        valid = F.pad(valid, (0, pad_w, 0, pad_h), value=False)
        height, width = image.shape[-2:]
    top = int(torch.randint(0, height - size + 1, (), generator=generator))
    left = int(torch.randint(0, width - size + 1, (), generator=generator))
    window = (..., slice(top, top + size), slice(left, left + size))
    return image[window], mask[window], valid[window]


def _resize(
    image: Tensor, mask: Tensor, valid: Tensor, size: tuple[int, int]
) -> tuple[Tensor, Tensor, Tensor]:
    if size == tuple(image.shape[-2:]):
        return image, mask, valid
    shrink = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    # Images: bilinear with antialiasing when shrinking; labels: nearest, so they stay 0/1.
    image = F.interpolate(
        image, size=size, mode="bilinear", align_corners=False, antialias=shrink
    ).clamp_(0.0, 1.0)
    mask = F.interpolate(mask[None], size=size, mode="nearest-exact")[0]
    valid = F.interpolate(valid[None].float(), size=size, mode="nearest-exact")[0] > 0.5
    return image, mask, valid


def joint_transform(
    image: Tensor,
    mask: Tensor,
    valid: Tensor,
    config: AugmentConfig,
    generator: torch.Generator,
    crop_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Rescale, crop, flip and rotate both dates, the mask and the valid map together.

    Args:
        image: (T, C, H, W) dates stacked.
        mask: (1, H, W).
        valid: (1, H, W) bool.
        config: Probabilities and ranges.
        generator: Source of every random draw.
        crop_size: Side of a random crop taken after rescaling; None keeps the whole image.

    Returns:
        The three transformed tensors, still aligned pixel for pixel.
    """
    low, high = config.scale
    factor = 1.0 if low == high == 1.0 else _uniform(generator, low, high)
    if crop_size is not None:
        # Rescaling then cropping equals cropping the window that maps onto the crop and
        # rescaling only that: same result, without resampling the whole image.
        source = max(1, round(crop_size / factor))
        image, mask, valid = random_crop(image, mask, valid, source, generator)
        image, mask, valid = _resize(image, mask, valid, (crop_size, crop_size))
    elif factor != 1.0:
        height, width = image.shape[-2:]
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        image, mask, valid = _resize(image, mask, valid, size)
    dims: tuple[int, ...] = ()
    if _chance(generator, config.hflip):
        dims += (-1,)
    if _chance(generator, config.vflip):
        dims += (-2,)
    if dims:
        image, mask, valid = image.flip(dims), mask.flip(dims), valid.flip(dims)
    if _chance(generator, config.rotate90):
        square = image.shape[-1] == image.shape[-2]
        # A quarter turn of a non-square image would change its shape, and a batch of such
        # samples could not be stacked; those turn by 180 degrees only.
        turns = int(torch.randint(1, 4, (), generator=generator)) if square else 2
        image = torch.rot90(image, turns, dims=(-2, -1))
        mask = torch.rot90(mask, turns, dims=(-2, -1))
        valid = torch.rot90(valid, turns, dims=(-2, -1))
    return image.contiguous(), mask.contiguous(), valid.contiguous()


def hue_rotation_matrix(turns: float) -> Tensor:
    """3x3 matrix rotating RGB colours about the grey axis by ``turns`` of a full circle.

    Grey stays grey and brightness (the mean of R, G, B) is kept; ``turns`` = 1/3 maps red to
    green. Rodrigues' rotation formula about the unit vector (1, 1, 1) / sqrt(3).
    """
    angle = 2.0 * math.pi * turns
    cos, sin = math.cos(angle), math.sin(angle)
    third = (1.0 - cos) / 3.0
    root = sin / math.sqrt(3.0)
    return torch.tensor(
        [
            [cos + third, third - root, third + root],
            [third + root, cos + third, third - root],
            [third - root, third + root, cos + third],
        ]
    )


def _gaussian_blur(image: Tensor, sigma: float) -> Tensor:
    radius = max(1, math.ceil(3.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    bands = image.shape[0]
    x = image[None]
    pad_h, pad_w = min(radius, image.shape[-2] - 1), min(radius, image.shape[-1] - 1)
    # Reflect padding needs radius < side; a tiny image gets a narrower padding and kernel.
    kh = kernel[radius - pad_h : radius + pad_h + 1]
    kw = kernel[radius - pad_w : radius + pad_w + 1]
    x = F.pad(x, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    x = F.conv2d(x, (kh / kh.sum()).view(1, 1, -1, 1).expand(bands, 1, -1, 1), groups=bands)
    x = F.conv2d(x, (kw / kw.sum()).view(1, 1, 1, -1).expand(bands, 1, 1, -1), groups=bands)
    return x[0]


def photometric(image: Tensor, config: AugmentConfig, generator: torch.Generator) -> Tensor:
    """Brightness, contrast, hue, blur and noise of one date.

    Args:
        image: (C, H, W) values in [0, 1].
        config: Magnitudes and probabilities.
        generator: Source of every random draw.

    Returns:
        (C, H, W) values in [0, 1]; ``image`` itself when every photometric option is off.
    """
    out = image
    if config.brightness > 0:
        out = out * _uniform(generator, 1.0 - config.brightness, 1.0 + config.brightness)
    if config.contrast > 0:
        factor = _uniform(generator, 1.0 - config.contrast, 1.0 + config.contrast)
        mean = out.mean()
        out = (out - mean) * factor + mean
    if config.hue > 0 and image.shape[0] >= 3:
        matrix = hue_rotation_matrix(_uniform(generator, -config.hue, config.hue))
        rgb = torch.einsum("ij,jhw->ihw", matrix.to(out.dtype), out[:3])
        out = torch.cat([rgb, out[3:]])
    if _chance(generator, config.blur):
        out = _gaussian_blur(out, _uniform(generator, *config.blur_sigma))
    if config.noise > 0:
        sigma = _uniform(generator, 0.0, config.noise)
        out = out + sigma * torch.randn(out.shape, generator=generator, dtype=out.dtype)
    if out is image:
        return image
    return out.clamp(0.0, 1.0)


def augment_sample(
    image: Tensor,
    mask: Tensor,
    valid: Tensor,
    config: AugmentConfig,
    generator: torch.Generator,
    crop_size: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Joint transforms on everything, then photometric ones on each date independently.

    Args:
        image: (T, C, H, W) dates stacked, values in [0, 1].
        mask: (1, H, W) 0/1.
        valid: (1, H, W) bool.
        config: The augmentation.
        generator: Source of every random draw.
        crop_size: Side of a random crop; None keeps the whole image.

    Returns:
        ``(image, mask, valid)`` transformed; the mask only moves, its values never change.
    """
    image, mask, valid = joint_transform(image, mask, valid, config, generator, crop_size)
    dates = [photometric(date, config, generator) for date in image]
    return torch.stack(dates), mask, valid
