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
    "augment_window",
    "crop_side",
    "crop_window",
    "cut_window",
    "draw_scale",
    "flip_rotate",
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


# Draws of a crop whose valid share is below the minimum, before the best one drawn is kept.
_CROP_TRIES = 10


def draw_scale(config: AugmentConfig, generator: torch.Generator) -> float:
    """The rescale factor of one sample (1 without a draw when ``config.scale`` is (1, 1))."""
    low, high = config.scale
    return 1.0 if low == high == 1.0 else _uniform(generator, low, high)


def crop_side(crop_size: int, factor: float) -> int:
    """Side of the window that rescaling by ``factor`` turns into a ``crop_size`` crop."""
    return max(1, round(crop_size / factor))


def crop_window(
    valid: Tensor, size: int, generator: torch.Generator, min_valid: float = 0.0
) -> tuple[int, int]:
    """Top-left corner of a random ``size`` x ``size`` window, drawn from valid pixels.

    A window whose share of valid pixels is below ``min_valid`` is drawn again, up to a few
    times; then the most valid one drawn is taken. A fully valid image takes the first draw,
    so the draws are those of a plain random crop. Where a side is shorter than ``size`` the
    window starts at 0 and reaches past the image (padding, counted as not valid).

    Args:
        valid: (1, H, W) or (H, W) bool, the pixels a crop should hold.
        size: Side of the window.
        generator: Source of the position.
        min_valid: Share of valid pixels, in [0, 1], a window must hold.

    Returns:
        ``(top, left)``.
    """
    height, width = valid.shape[-2:]
    plane = valid.reshape(height, width)
    best, best_count = (0, 0), -1
    for _ in range(_CROP_TRIES):
        top = int(torch.randint(0, max(height, size) - size + 1, (), generator=generator))
        left = int(torch.randint(0, max(width, size) - size + 1, (), generator=generator))
        count = int(plane[top : top + size, left : left + size].sum())
        if count > best_count:
            best, best_count = (top, left), count
        if min_valid <= 0.0 or count >= min_valid * size * size:
            break
    return best


def cut_window(
    image: Tensor, mask: Tensor, valid: Tensor, top: int, left: int, size: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Cut the ``size`` x ``size`` window at (top, left) from mask and valid, and pad all three.

    Args:
        image: (T, C, h, w) the window of the dates alone (read by window, or cut already);
            smaller than ``size`` where the window reaches past the image.
        mask: (1, H, W) whole mask.
        valid: (1, H, W) bool, whole.
        top: Row of the window.
        left: Column of the window.
        size: Side of the window.

    Returns:
        The three at (..., size, size), padded at the bottom / right with zeros not valid.
    """
    mask = mask[..., top : top + size, left : left + size]
    valid = valid[..., top : top + size, left : left + size]
    if tuple(image.shape[-2:]) != tuple(mask.shape[-2:]):
        raise ValueError(f"image window {tuple(image.shape)} does not fit {tuple(mask.shape)}")
    pad = (0, size - mask.shape[-1], 0, size - mask.shape[-2])
    if pad[1] or pad[3]:
        image = F.pad(image, pad)
        mask = F.pad(mask, pad)
        valid = F.pad(valid, pad, value=False)
    return image, mask, valid


def random_crop(
    image: Tensor,
    mask: Tensor,
    valid: Tensor,
    size: int,
    generator: torch.Generator,
    min_valid: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Cut the same random ``size`` x ``size`` window from image, mask and valid.

    A side shorter than ``size`` is padded at the bottom / right with zeros that are marked
    not valid, so every crop has the requested size. The window is drawn again while its
    share of valid pixels is below ``min_valid`` (see :func:`crop_window`).

    Args:
        image: (T, C, H, W) dates stacked.
        mask: (1, H, W).
        valid: (1, H, W) bool.
        size: Side of the crop.
        generator: Source of the window position.
        min_valid: Share of valid pixels a crop must hold.

    Returns:
        The three tensors cut to (..., size, size).
    """
    top, left = crop_window(valid, size, generator, min_valid)
    window = (..., slice(top, top + size), slice(left, left + size))
    return cut_window(image[window], mask, valid, top, left, size)


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
    min_valid: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Rescale, crop, flip and rotate both dates, the mask and the valid map together.

    Args:
        image: (T, C, H, W) dates stacked.
        mask: (1, H, W).
        valid: (1, H, W) bool.
        config: Probabilities and ranges.
        generator: Source of every random draw.
        crop_size: Side of a random crop taken after rescaling; None keeps the whole image.
        min_valid: Share of valid pixels a crop must hold (:func:`crop_window`).

    Returns:
        The three transformed tensors, still aligned pixel for pixel.
    """
    factor = draw_scale(config, generator)
    if crop_size is not None:
        # Rescaling then cropping equals cropping the window that maps onto the crop and
        # rescaling only that: same result, without resampling the whole image.
        source = crop_side(crop_size, factor)
        image, mask, valid = random_crop(image, mask, valid, source, generator, min_valid)
        image, mask, valid = _resize(image, mask, valid, (crop_size, crop_size))
    elif factor != 1.0:
        height, width = image.shape[-2:]
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        image, mask, valid = _resize(image, mask, valid, size)
    return flip_rotate(image, mask, valid, config, generator)


def flip_rotate(
    image: Tensor, mask: Tensor, valid: Tensor, config: AugmentConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """The random flips and quarter turns of :func:`joint_transform`, on all three together."""
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
    min_valid: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Joint transforms on everything, then photometric ones on each date independently.

    Args:
        image: (T, C, H, W) dates stacked, values in [0, 1].
        mask: (1, H, W) 0/1.
        valid: (1, H, W) bool.
        config: The augmentation.
        generator: Source of every random draw.
        crop_size: Side of a random crop; None keeps the whole image.
        min_valid: Share of valid pixels a crop must hold (:func:`crop_window`).

    Returns:
        ``(image, mask, valid)`` transformed; the mask only moves, its values never change.
    """
    image, mask, valid = joint_transform(
        image, mask, valid, config, generator, crop_size, min_valid
    )
    dates = [photometric(date, config, generator) for date in image]
    return torch.stack(dates), mask, valid


def augment_window(
    image: Tensor,
    mask: Tensor,
    valid: Tensor,
    window: tuple[int, int, int],
    config: AugmentConfig,
    generator: torch.Generator,
    crop_size: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`augment_sample` of a crop whose window was drawn, and read, beforehand.

    The caller draws ``factor = draw_scale(...)``, then ``(top, left) = crop_window(valid,
    crop_side(crop_size, factor), ...)`` with the same generator, and reads only that window
    of the dates: the draws are those :func:`augment_sample` makes, so the sample is the same.

    Args:
        image: (T, C, h, w) the window of the dates (smaller past the image's edge).
        mask: (1, H, W) whole mask.
        valid: (1, H, W) bool, whole.
        window: ``(top, left, side)`` of the window.
        config: The augmentation.
        generator: The generator the window was drawn from.
        crop_size: Side of the crop returned.

    Returns:
        ``(image, mask, valid)`` at (..., crop_size, crop_size), transformed.
    """
    top, left, side = window
    image, mask, valid = cut_window(image, mask, valid, top, left, side)
    image, mask, valid = _resize(image, mask, valid, (crop_size, crop_size))
    image, mask, valid = flip_rotate(image, mask, valid, config, generator)
    dates = [photometric(date, config, generator) for date in image]
    return torch.stack(dates), mask, valid
