"""Pictures people look at: the one display stretch and the one PNG writer.

Evaluation reports, quicklooks and PNG change maps are written here. A picture's pixels with
no data are written transparent (an alpha channel is added only when some pixel has none), the
same convention the readers of :mod:`dsifn.io.images` take: alpha 0 is no data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dsifn.io.atomic import atomic_path

__all__ = ["display_stretch", "write_png"]


# Images whose brightest pixels (the upper percentile) stay below this are stretched.
DARK = 0.25


def display_stretch(
    images: Sequence[np.ndarray],
    valid: Sequence[np.ndarray | None] | None = None,
    *,
    low: float = 2.0,
    high: float = 98.0,
    bands: Sequence[int] = (0, 1, 2),
) -> list[np.ndarray]:
    """Show images alike, as they are when bright enough, else with one percentile stretch.

    Images are scaled values in [0, 1] (the model's input before normalisation). If their upper
    percentile reaches :data:`DARK` (8-bit photographs) they are shown as they are; darker ones
    (16-bit data, reflectance) are stretched per band between the ``low`` and ``high``
    percentiles of all of them together, so that both dates of a pair look alike.

    Args:
        images: (C, h, w) images, e.g. both dates of a pair.
        valid: bool (h, w) per image, the pixels the percentiles come from; None: all.
        low: Percentile shown as black when stretching.
        high: Percentile shown as full brightness when stretching.
        bands: Zero-based bands shown as red, green and blue (clipped to the bands there are;
            one band is shown in grey).

    Returns:
        One uint8 (h, w, 3) picture per image.
    """
    masks = list(valid) if valid is not None else [None] * len(images)
    rgb = []
    for image in images:
        values = np.nan_to_num(np.asarray(image, dtype=np.float32))
        rgb.append(values[[min(b, values.shape[0] - 1) for b in bands]])
    samples = np.concatenate(
        [im.reshape(3, -1) if m is None else im[:, m] for im, m in zip(rgb, masks, strict=True)],
        axis=1,
    )
    lo, hi = np.zeros(3), np.ones(3)
    if samples.shape[1] and float(np.percentile(samples, high)) < DARK:
        lo, hi = np.percentile(samples, low, axis=1), np.percentile(samples, high, axis=1)
    span = np.where(hi > lo, hi - lo, 1.0).reshape(3, 1, 1)
    pictures = []
    for im in rgb:
        scaled = np.clip((im - lo.reshape(3, 1, 1)) / span, 0.0, 1.0)
        pictures.append(np.rint(np.moveaxis(scaled, 0, -1) * 255.0).astype(np.uint8))
    return pictures


def write_png(
    path: str | os.PathLike[str],
    pixels: np.ndarray,
    *,
    valid: np.ndarray | None = None,
    overwrite: bool = False,
) -> Path:
    """Write uint8 (h, w) grey or (h, w, 3) RGB pixels as a PNG, atomically.

    Args:
        path: The PNG to write.
        pixels: The picture.
        valid: bool (h, w); where False the pixel is written transparent (alpha 0), the PNG's
            way of saying "no data". None, or all True: no alpha channel.
        overwrite: Replace an existing file.

    Returns:
        The path written.
    """
    from PIL import Image

    picture = np.asarray(pixels, dtype=np.uint8)
    if valid is not None and not bool(np.all(valid)):
        alpha = np.where(valid, 255, 0).astype(np.uint8)
        picture = np.dstack([picture, alpha])
    with atomic_path(path, overwrite=overwrite) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return Path(path)
