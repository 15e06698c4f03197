"""One date as a stack of bands on a pixel grid, read by windows: the interface and memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from dsifn.errors import InputError

if TYPE_CHECKING:
    from dsifn.io.radiometry import Conversion

__all__ = [
    "ImageData",
    "ImageSource",
    "MemorySource",
    "PixelGrid",
    "decimated_indices",
    "decimated_shape",
    "select_bands",
    "valid_pixels",
]


@dataclass(frozen=True)
class PixelGrid:
    """Where pixels lie: CRS, affine transform and size."""

    crs: Any  # rasterio CRS, or None for plain images
    transform: Any  # affine.Affine
    width: int  # columns
    height: int  # rows

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel width and height in CRS units."""
        return (abs(float(self.transform.a)), abs(float(self.transform.e)))

    @property
    def tolerance(self) -> float:
        """Origins and pixel sizes this close (a thousandth of a pixel) are the same grid."""
        return 1e-3 * min(self.resolution)


class ImageData(NamedTuple):
    """Raw values of one date and where they are valid, read together (after rio-tiler's).

    A pixel is valid where every band is: not the nodata value, not masked by an alpha band or
    by GDAL's internal or sidecar mask, covered by every band file, and finite.
    """

    values: np.ndarray  # (C, h, w) raw values in the source's type
    valid: np.ndarray  # bool (h, w)


class ImageSource:
    """One date as a band stack on a pixel grid, read by windows (interface)."""

    grid: PixelGrid
    count: int  # bands after selection
    dtype: str  # numpy dtype of the raw values
    name: str  # for messages and metadata
    # Why its files' names say it is a Sentinel-2 product of processing baseline 04.00 or
    # later ("sensed 2023-06-01"), or None (dsifn.io.radiometry.product_hint).
    hint: str | None = None

    def stated_conversions(self) -> list[Conversion | None]:
        """What the files state about each band's digital numbers (None: nothing stated)."""
        return [None] * self.count

    def read(self, row: int, col: int, height: int, width: int) -> ImageData:
        """Values and validity of a window inside the grid, values in :attr:`dtype`."""
        raise NotImplementedError

    def read_decimated(self, max_side: int) -> ImageData:
        """The whole image shrunk to at most ``max_side`` pixels a side (float32 values).

        The pixels kept are the nearest to the centres of the shrunk grid's cells
        (:func:`decimated_indices`), as GDAL's nearest-neighbour decimation keeps them.
        """
        raise NotImplementedError

    def read_all(self) -> ImageData:
        """The whole image."""
        return self.read(0, 0, self.grid.height, self.grid.width)

    def reopen(self) -> ImageSource:
        """The same date through its own file handles, for reading on another thread.

        A GDAL dataset must not be read by two threads at once; each reader thread gets its
        own. Sources that hold no files return themselves.
        """
        return self

    def close(self) -> None:
        """Release open files."""

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def select_bands(count: int, bands: Sequence[int] | None, name: str) -> list[int]:
    """0-based indices of 1-based ``bands`` among ``count`` (all when None), checked."""
    if bands is None:
        return list(range(count))
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise InputError(f"{name} has {count} band(s); band {bad[0]} is out of range 1..{count}")
    return [b - 1 for b in bands]


def valid_pixels(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """(C, h, w) raw values -> (h, w) True where no band is ``nodata`` or non-finite."""
    valid = np.ones(values.shape[1:], dtype=bool)
    if np.issubdtype(values.dtype, np.floating):
        valid &= np.isfinite(values).all(axis=0)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~(values == nodata).any(axis=0)
    return valid


def decimated_shape(grid: PixelGrid, max_side: int) -> tuple[int, int]:
    """The shape of ``grid`` shrunk to at most ``max_side`` pixels a side."""
    factor = max(grid.height, grid.width) / max_side
    if factor <= 1:
        return grid.height, grid.width
    return max(1, round(grid.height / factor)), max(1, round(grid.width / factor))


def decimated_indices(length: int, count: int) -> np.ndarray:
    """Which of ``length`` pixels a decimation to ``count`` keeps: the cell centres'."""
    return np.minimum(((np.arange(count) + 0.5) * (length / count)).astype(np.int64), length - 1)


class MemorySource(ImageSource):
    """A date already in memory, for running arrays through the readers and the tile loop.

    Args:
        values: (C, H, W) values.
        valid: bool (H, W) validity; None: every pixel valid.
        name: What to call this date in messages.
    """

    def __init__(
        self, values: np.ndarray, valid: np.ndarray | None = None, name: str = "image"
    ) -> None:
        from affine import Affine

        self._array = values
        self.valid_pixels = np.ones(values.shape[1:], dtype=bool) if valid is None else valid
        self.name = name
        self.count = int(values.shape[0])
        self.dtype = str(values.dtype)
        self.grid = PixelGrid(None, Affine.identity(), int(values.shape[2]), int(values.shape[1]))

    def read(self, row: int, col: int, height: int, width: int) -> ImageData:
        """Values and validity of a window (copies), values in the source's type."""
        rows, cols = slice(row, row + height), slice(col, col + width)
        return ImageData(self._array[:, rows, cols].copy(), self.valid_pixels[rows, cols].copy())

    def read_decimated(self, max_side: int) -> ImageData:
        """The pixels nearest the centres of a grid at most ``max_side`` a side."""
        h, w = decimated_shape(self.grid, max_side)
        rows = decimated_indices(self.grid.height, h)[:, None]
        cols = decimated_indices(self.grid.width, w)[None, :]
        values = self._array[:, rows, cols].astype(np.float32)
        return ImageData(values, self.valid_pixels[rows, cols])
