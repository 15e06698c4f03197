"""Image pairs of any size: the checks, the padding to a multiple of 16 and the crop back.

Every network here halves the resolution four times, so it computes on sides that are
multiples of 16. A pair of another size is checked, padded at the bottom and right by
reflection up to the next multiple, and each output is cropped back to ``ceil(side / s)`` at
its stride s, so output pixel (i, j) at stride s always covers input pixels
[i*s, (i+1)*s) x [j*s, (j+1)*s).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from dsifn.errors import InputError

__all__ = ["SIZE_MULTIPLE", "check_pair", "crop_to", "reflect_pad"]

# Input sides are padded to multiples of this: the networks halve the resolution four times.
SIZE_MULTIPLE = 16


def check_pair(t1: Tensor, t2: Tensor, bands: int) -> None:
    """Refuse a pair that no network here can take.

    Args:
        t1: (B, C, H, W) float image of the first date.
        t2: (B, C, H, W) float image of the second date.
        bands: The C the network was built for.

    Raises:
        InputError: If either is not a float (B, C, H, W) tensor, their shapes differ, C is
            not ``bands`` or a side is below 16 (reflection needs more pixels than it adds).
    """
    for name, x in (("t1", t1), ("t2", t2)):
        if not isinstance(x, Tensor):
            raise InputError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
        if not x.is_floating_point():
            raise InputError(
                f"{name} must be a float tensor (scaled and normalised); got {x.dtype}"
            )
        if x.ndim != 4:
            raise InputError(f"{name} must have shape (B, C, H, W); got {tuple(x.shape)}")
    if t1.shape != t2.shape:
        raise InputError(f"t1 and t2 shapes differ: {tuple(t1.shape)} vs {tuple(t2.shape)}")
    _, channels, height, width = t1.shape
    if channels != bands:
        raise InputError(f"expected {bands} bands per date; got {channels}")
    if min(height, width) < SIZE_MULTIPLE:
        raise InputError(f"image sides must be at least 16 pixels; got {height}x{width}")


def reflect_pad(x: Tensor, multiple: int = SIZE_MULTIPLE) -> Tensor:
    """Pad the bottom and right of ``x`` by reflection to sides that are multiples.

    Args:
        x: (B, C, H, W); reflection needs sides longer than the padding, as H, W >= 16 are.
        multiple: What the sides must divide by.

    Returns:
        (B, C, ceil(H/m)*m, ceil(W/m)*m); ``x`` itself when nothing is missing.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h or pad_w:
        return F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
    return x


def crop_to(x: Tensor, height: int, width: int, stride: int = 1) -> Tensor:
    """Crop a map computed on a padded pair back to the pair's own grid.

    Args:
        x: (..., h, w) map at ``stride`` of the padded input.
        height: H of the unpadded input.
        width: W of the unpadded input.
        stride: The map's stride s.

    Returns:
        (..., ceil(H/s), ceil(W/s)).
    """
    return x[..., : -(-height // stride), : -(-width // stride)]
