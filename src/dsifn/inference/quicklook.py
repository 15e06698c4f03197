"""A small picture to look at: before | after | after with the change in red."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from dsifn.contract import is_change
from dsifn.io.pairs import ImagePair
from dsifn.io.pictures import display_stretch, write_png

__all__ = ["compose_quicklook", "write_quicklook"]

# Longest side of each panel, in pixels.
PANEL_SIDE = 800
GAP = 8  # white pixels between panels
CHANGE_RGB = np.array([255, 0, 0], dtype=np.float32)
NODATA_RGB = np.array([40, 40, 40], dtype=np.float32)


def compose_quicklook(
    before: np.ndarray,
    after: np.ndarray,
    probability: np.ndarray,
    valid: np.ndarray,
    threshold: float,
) -> np.ndarray:
    """Side-by-side picture.

    Args:
        before: uint8 (h, w, 3) picture of T1 (:func:`dsifn.io.pictures.display_stretch`).
        after: uint8 (h, w, 3) picture of T2.
        probability: float32 (h, w) change probability (NaN = nodata).
        valid: bool (h, w) where both dates are valid.
        threshold: Change threshold.

    Returns:
        uint8 (h, 3 * w + 2 * GAP, 3).
    """
    changed = valid & is_change(probability, threshold)
    before, after = before.astype(np.float32), after.astype(np.float32)
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
    pair: ImagePair,
    work: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    threshold: float,
    overwrite: bool = False,
    panel_side: int = PANEL_SIDE,
) -> Path:
    """Write the before | after | change PNG from decimated reads (never the whole scene).

    Args:
        pair: Both dates.
        work: The probability raster (float32, NaN = nodata).
        path: Output PNG.
        threshold: Change threshold.
        overwrite: Replace an existing file.
        panel_side: Longest side of each panel.

    Returns:
        The path written.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    a, b = pair.read_decimated(panel_side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(work) as src:
            probability = src.read(1, out_shape=a.values.shape[1:])
    valid = a.valid & b.valid & ~np.isnan(probability)
    shown = [pair.scaling(a.values), pair.scaling(b.values)]  # [0, 1], as the model saw them
    before, after = display_stretch(shown, [a.valid, b.valid])
    picture = compose_quicklook(before, after, probability, valid, threshold)
    return write_png(path, picture, overwrite=overwrite)
