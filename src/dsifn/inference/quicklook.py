"""A small picture to look at: before | after | after with the change in red."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from dsifn.contract import is_change
from dsifn.inference.sources import SceneSource
from dsifn.io.atomic import atomic_path

__all__ = ["compose_quicklook", "display_stretch", "write_quicklook"]

# Longest side of each panel, in pixels.
PANEL_SIDE = 800
GAP = 8  # white pixels between panels
CHANGE_RGB = np.array([255, 0, 0], dtype=np.float32)
NODATA_RGB = np.array([40, 40, 40], dtype=np.float32)


def display_stretch(
    images: list[np.ndarray], valid: list[np.ndarray], low: float = 2.0, high: float = 98.0
) -> list[np.ndarray]:
    """Scale (C, h, w) images to uint8 (h, w, 3) with one per-band percentile stretch for all.

    The first three bands are shown as RGB; a single band as grey.
    """
    rgb = [im[:3] if im.shape[0] >= 3 else np.repeat(im[:1], 3, axis=0) for im in images]
    samples = np.concatenate([im[:, v] for im, v in zip(rgb, valid, strict=True)], axis=1)
    if samples.shape[1] == 0:
        lo, hi = np.zeros(3), np.ones(3)
    else:
        lo = np.percentile(samples, low, axis=1)
        hi = np.percentile(samples, high, axis=1)
    span = np.where(hi > lo, hi - lo, 1.0).reshape(3, 1, 1)
    out = []
    for im in rgb:
        scaled = np.clip((im - lo.reshape(3, 1, 1)) / span, 0.0, 1.0) * 255.0
        out.append(np.moveaxis(scaled, 0, -1).astype(np.float32))
    return out


def compose_quicklook(
    before: np.ndarray,
    after: np.ndarray,
    probability: np.ndarray,
    valid: np.ndarray,
    threshold: float,
) -> np.ndarray:
    """Side-by-side picture.

    Args:
        before: float32 (h, w, 3) display values 0-255 of T1.
        after: float32 (h, w, 3) of T2.
        probability: float32 (h, w) change probability (NaN = nodata).
        valid: bool (h, w) where both dates are valid.
        threshold: Change threshold.

    Returns:
        uint8 (h, 3 * w + 2 * GAP, 3).
    """
    changed = valid & is_change(probability, threshold)
    overlay = after.copy()
    overlay[changed] = 0.45 * overlay[changed] + 0.55 * CHANGE_RGB
    panels = []
    for panel in (before, after, overlay):
        shown = panel.copy()
        shown[~valid] = NODATA_RGB
        panels.append(shown)
    gap = np.full((before.shape[0], GAP, 3), 255.0, dtype=np.float32)
    picture = np.concatenate([panels[0], gap, panels[1], gap, panels[2]], axis=1)
    pixels: np.ndarray = np.clip(np.rint(picture), 0, 255).astype(np.uint8)
    return pixels


def write_quicklook(
    t1: SceneSource,
    t2: SceneSource,
    work: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    threshold: float,
    overwrite: bool = False,
    panel_side: int = PANEL_SIDE,
) -> Path:
    """Write the before | after | change PNG from decimated reads (never the whole scene).

    Args:
        t1: First date.
        t2: Second date.
        work: The probability raster (float32, NaN = nodata).
        path: Output PNG.
        threshold: Change threshold.
        overwrite: Replace an existing file.
        panel_side: Longest side of each panel.

    Returns:
        The path written.
    """
    import rasterio
    from PIL import Image
    from rasterio.errors import NotGeoreferencedWarning

    a, valid_a = t1.read_decimated(panel_side)
    b, valid_b = t2.read_decimated(panel_side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(work) as src:
            probability = src.read(1, out_shape=a.shape[1:])
    valid = valid_a & valid_b & ~np.isnan(probability)
    before, after = display_stretch([a, b], [valid_a, valid_b])
    picture = compose_quicklook(before, after, probability, valid, threshold)
    with atomic_path(path, overwrite=overwrite) as partial:
        Image.fromarray(picture, mode="RGB").save(partial, format="PNG")
    return Path(path)
