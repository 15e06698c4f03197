"""The two dates of a scene pair: scaled windows, validity of both, and their grids' match.

Files are opened and read by :mod:`dsifn.io.images`, the package's one reader of pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from dsifn.errors import DataError
from dsifn.io.images import ImageSource

__all__ = ["SceneSource", "both_valid", "check_same_grid", "read_scaled"]

# One date of a scene (the name scene code knows the reader's sources by).
SceneSource = ImageSource


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
        DataError: Naming what differs and suggesting ``--align``.
    """
    a, b = first.grid, second.grid
    hint = f"; pass --align to resample {second.name} onto {first.name}'s grid"
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
