"""The two dates of a scene pair: opened on one grid, scaled windows, validity of both.

Files are opened and read by :mod:`dsifn.io.images`, the package's one reader of pixels.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dsifn.errors import ConfigError, DataError, InputError
from dsifn.io.images import PILLOW_SUFFIXES, ImageSource, open_image
from dsifn.scaling import Scaling, ScalingRule

__all__ = [
    "SceneSource",
    "as_paths",
    "both_valid",
    "check_same_grid",
    "is_plain",
    "open_pair",
    "read_scaled",
    "scene_scaling",
]

# One date of a scene (the name scene code knows the reader's sources by).
SceneSource = ImageSource
# Longest side of the decimated read used for the percentile stretch.
STRETCH_SAMPLE_SIDE = 1024


def as_paths(value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """One date's files as a list: a single file, or several band files in order."""
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def is_plain(paths: Sequence[Path]) -> bool:
    """Whether a date is one plain image (PNG/JPEG/BMP), which has no georeferencing."""
    return len(paths) == 1 and paths[0].suffix.lower() in PILLOW_SUFFIXES


def open_pair(
    before: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    after: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    bands: Sequence[int] | Sequence[str] | None = None,
    nodata: float | None = None,
    align: bool = False,
    resampling: str = "bilinear",
) -> tuple[SceneSource, SceneSource]:
    """Open both dates on one grid, refusing mismatches unless ``align``.

    Args:
        before: T1: a raster, a PNG/JPEG/BMP, or several band files stacked in order.
        after: T2, the same way.
        bands: 1-based bands to keep from each stack.
        nodata: Raw value that marks no data, instead of the files' own marks.
        align: Resample T2 onto T1's grid (bilinear) instead of refusing a mismatch.
        resampling: How band files of coarser resolution are put on the finest grid.

    Returns:
        The T1 and T2 sources (close them, or use them as context managers).
    """
    p1, p2 = as_paths(before), as_paths(after)
    for name, paths in (("T1", p1), ("T2", p2)):
        for path in paths:
            if path.is_dir():
                raise InputError(f"{name} file {path} is a folder, not an image file")
    if is_plain(p1) != is_plain(p2):
        raise InputError("give both dates as plain images (PNG/JPEG/BMP) or both as rasters")
    if align and is_plain(p1):
        raise ConfigError("align needs georeferenced rasters, not plain images")
    t1 = open_image(p1, bands=bands, nodata=nodata, resampling=resampling, name="T1")
    try:
        grid = t1.grid if align else None
        t2 = open_image(p2, bands=bands, nodata=nodata, grid=grid, resampling=resampling, name="T2")
        try:
            check_same_grid(t1, t2)
        except BaseException:
            t2.close()
            raise
    except BaseException:
        t1.close()
        raise
    return t1, t2


def scene_scaling(t1: SceneSource, t2: SceneSource, rule: ScalingRule) -> Scaling:
    """The scaling of a scene pair: ``rule`` applied to its type (a stretch to both dates)."""

    def samples() -> list[np.ndarray]:
        found = []
        for source in (t1, t2):
            values, valid = source.read_decimated(STRETCH_SAMPLE_SIDE)
            found.append(values[:, valid])
        return found

    return rule.resolve(np.result_type(t1.dtype, t2.dtype), t1.count, samples)


def read_scaled(
    source: SceneSource,
    row: int,
    col: int,
    height: int,
    width: int,
    scaling: Callable[[np.ndarray], np.ndarray],
) -> np.ndarray:
    """float32 (count, height, width) values of a window scaled to [0, 1]; invalid pixels 0."""
    values = scaling(source.read(row, col, height, width))
    values[:, ~source.read_mask(row, col, height, width)] = 0.0
    return values


def both_valid(first: SceneSource, second: SceneSource, row: int, height: int) -> np.ndarray:
    """Validity of full rows, a bool (height, width) array: True where both dates are valid."""
    width = first.grid.width
    valid = first.read_mask(row, 0, height, width) & second.read_mask(row, 0, height, width)
    return np.asarray(valid, dtype=bool)


def check_same_grid(first: SceneSource, second: SceneSource) -> None:
    """Refuse a second date whose CRS, resolution, extent or band count differ from the first.

    Raises:
        DataError: Naming what differs and suggesting `` `align=True` ``.
    """
    a, b = first.grid, second.grid
    hint = f"; pass `align=True` to resample {second.name} onto {first.name}'s grid"
    if a.crs != b.crs:
        raise DataError(f"{second.name} CRS {b.crs} differs from {first.name} CRS {a.crs}{hint}")
    if a.crs is not None or b.crs is not None:
        ra, rb = a.resolution, b.resolution
        if not np.allclose(ra, rb, rtol=1e-6, atol=0):
            raise DataError(
                f"{second.name} resolution {rb[0]:g}x{rb[1]:g} differs from {first.name} "
                f"resolution {ra[0]:g}x{ra[1]:g}{hint}"
            )
    same_origin = b.transform.almost_equals(a.transform, precision=a.tolerance)
    if (a.width, a.height) != (b.width, b.height) or not same_origin:
        raise DataError(
            f"{second.name} extent ({b.width}x{b.height} px from {b.transform.c:g}, "
            f"{b.transform.f:g}) differs from {first.name} extent ({a.width}x{a.height} px from "
            f"{a.transform.c:g}, {a.transform.f:g}){hint}"
        )
    if first.count != second.count:
        raise DataError(
            f"{first.name} has {first.count} band(s) but {second.name} has {second.count}"
        )
