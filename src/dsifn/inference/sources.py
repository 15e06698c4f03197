"""Reading the two dates window by window: GeoTIFF stacks, alignment and validity masks.

A :class:`RasterSource` presents one date as a stack of bands on one pixel grid, however it is
stored: one multi-band file, or several band files at different resolutions (Sentinel-2's 10,
20 and 60 m bands) warped on the fly onto the finest grid with :class:`rasterio.vrt.WarpedVRT`.
Nothing is read whole: callers ask for windows, or for a decimated overview.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsifn.errors import DataError, InputError

__all__ = [
    "ArraySource",
    "PixelGrid",
    "RasterSource",
    "SceneSource",
    "both_valid",
    "check_same_grid",
    "read_scaled",
]

# Extensions read whole with Pillow; their outputs are PNG too.
PLAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


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


class SceneSource:
    """One date as a band stack on a pixel grid, read by windows (interface)."""

    grid: PixelGrid
    count: int  # bands after selection
    dtype: str  # numpy dtype of the raw values
    name: str  # for messages and metadata

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """float32 (count, height, width) raw values of a window inside the grid."""
        raise NotImplementedError

    def read_mask(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Validity of a window: bool (height, width), True where every selected band is valid."""
        raise NotImplementedError

    def read_decimated(self, max_side: int) -> tuple[np.ndarray, np.ndarray]:
        """A whole-scene read shrunk to at most ``max_side`` pixels a side.

        Returns:
            float32 (count, h, w) raw values and bool (h, w) validity.
        """
        raise NotImplementedError

    def reopen(self) -> SceneSource:
        """The same date through its own file handles, for reading on another thread.

        A GDAL dataset must not be read by two threads at once; each reader thread gets its
        own. Sources that hold no files return themselves.
        """
        return self

    def close(self) -> None:
        """Release open files."""

    def __enter__(self) -> SceneSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _decimated_shape(grid: PixelGrid, max_side: int) -> tuple[int, int]:
    factor = max(grid.height, grid.width) / max_side
    if factor <= 1:
        return grid.height, grid.width
    return max(1, round(grid.height / factor)), max(1, round(grid.width / factor))


def _select(count: int, bands: Sequence[int] | None, name: str) -> list[int]:
    if bands is None:
        return list(range(count))
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise InputError(f"{name} has {count} band(s); --bands {bad[0]} is out of range 1..{count}")
    return [b - 1 for b in bands]


class RasterSource(SceneSource):
    """One date from one or more raster files, stacked in order and put on one grid.

    Args:
        paths: One multi-band file, or several files whose bands are stacked in the given
            order.
        bands: 1-based band numbers to keep from the stack, in the order wanted; None: all.
        grid: Target grid; None: the grid of the finest-resolution file (of the only file).
        resampling: Resampling name for files not on the target grid.
        name: What to call this date in messages ("T1", "T2").
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        bands: Sequence[int] | None = None,
        grid: PixelGrid | None = None,
        resampling: str = "bilinear",
        name: str = "image",
    ) -> None:
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.errors import RasterioIOError
        from rasterio.vrt import WarpedVRT

        if not paths:
            raise InputError(f"no file given for {name}")
        self._options: dict[str, Any] = {
            "bands": bands,
            "grid": grid,
            "resampling": resampling,
            "name": name,
        }
        self.name = name
        self.paths = [Path(p) for p in paths]
        self._files: list[Any] = []
        try:
            for path in self.paths:
                if not path.is_file():
                    raise FileNotFoundError(f"{name} file {path} does not exist")
                try:
                    self._files.append(rasterio.open(path))
                except RasterioIOError as exc:
                    raise DataError(f"{name} file {path} is not a readable raster: {exc}") from exc
            if grid is None:
                finest = min(self._files, key=lambda f: abs(f.transform.a * f.transform.e))
                grid = PixelGrid(finest.crs, finest.transform, finest.width, finest.height)
            self.grid = grid
            layers: list[Any] = []
            for f in self._files:
                if f.crs is None and len(self._files) > 1:
                    raise DataError(f"{name} file {f.name} has no CRS: cannot stack it")
                on_grid = (
                    f.crs == grid.crs
                    and f.width == grid.width
                    and f.height == grid.height
                    and f.transform.almost_equals(grid.transform, precision=_tolerance(grid))
                )
                if on_grid:
                    layers.append(f)
                else:
                    if f.crs is None or grid.crs is None:
                        raise DataError(f"{name} file {f.name} has no CRS: cannot resample it")
                    layers.append(
                        WarpedVRT(
                            f,
                            crs=grid.crs,
                            transform=grid.transform,
                            width=grid.width,
                            height=grid.height,
                            resampling=Resampling[resampling],
                        )
                    )
            self._layers = layers
            stack = [(layer, b) for layer in layers for b in range(1, layer.count + 1)]
            self._bands = [stack[i] for i in _select(len(stack), bands, name)]
            self.count = len(self._bands)
            self.dtype = str(np.result_type(*[layer.dtypes[b - 1] for layer, b in self._bands]))
        except BaseException:
            self.close()
            raise

    def reopen(self) -> RasterSource:
        """The same stack, bands and grid through new file handles (close it when done)."""
        return RasterSource(self.paths, **{**self._options, "grid": self.grid})

    def _groups(self) -> list[tuple[Any, list[int], list[int]]]:
        # Read each file once per window: (layer, its band numbers, positions in the stack).
        groups: dict[int, tuple[Any, list[int], list[int]]] = {}
        for pos, (layer, band) in enumerate(self._bands):
            entry = groups.setdefault(id(layer), (layer, [], []))
            entry[1].append(band)
            entry[2].append(pos)
        return list(groups.values())

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """float32 (count, height, width) raw values of a window inside the grid."""
        from rasterio.windows import Window

        window = Window(col, row, width, height)
        out = np.empty((self.count, height, width), dtype=np.float32)
        for layer, bands, positions in self._groups():
            out[positions] = layer.read(bands, window=window)
        return out

    def read_mask(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Validity of a window: bool (height, width), True where every selected band is valid."""
        from rasterio.windows import Window

        window = Window(col, row, width, height)
        valid = np.ones((height, width), dtype=bool)
        for layer, bands, _ in self._groups():
            valid &= np.all(layer.read_masks(bands, window=window) > 0, axis=0)
        return valid

    def read_decimated(self, max_side: int) -> tuple[np.ndarray, np.ndarray]:
        """Whole scene shrunk to at most ``max_side`` a side: (count, h, w) values, (h, w) mask."""
        h, w = _decimated_shape(self.grid, max_side)
        out = np.empty((self.count, h, w), dtype=np.float32)
        valid = np.ones((h, w), dtype=bool)
        for layer, bands, positions in self._groups():
            out[positions] = layer.read(bands, out_shape=(len(bands), h, w))
            masks = layer.read_masks(bands, out_shape=(len(bands), h, w))
            valid &= np.all(masks > 0, axis=0)
        return out, valid

    def close(self) -> None:
        """Close the files and any warped views of them."""
        for layer in getattr(self, "_layers", []):
            if layer not in self._files:
                layer.close()
        for f in self._files:
            f.close()
        self._files = []
        self._layers = []


def _tolerance(grid: PixelGrid) -> float:
    # Origins and pixel sizes equal to a thousandth of a pixel count as the same grid.
    return 1e-3 * min(grid.resolution)


class ArraySource(SceneSource):
    """A plain image (PNG, JPEG) read whole with Pillow; an alpha channel marks invalid pixels.

    Args:
        path: The image file.
        bands: 1-based band numbers to keep; None: all colour bands.
        name: What to call this date in messages.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, bands: Sequence[int] | None = None, name: str
    ) -> None:
        from PIL import Image, UnidentifiedImageError

        file = Path(path)
        if not file.is_file():
            raise FileNotFoundError(f"{name} file {file} does not exist")
        try:
            with Image.open(file) as image:
                image.load()
                mode = image.mode
                if mode in ("P", "CMYK", "YCbCr", "LAB", "HSV", "1"):
                    image = image.convert("RGBA" if "transparency" in image.info else "RGB")
                    mode = image.mode
                array = np.asarray(image)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{name} file {file} is not a readable image: {exc}") from exc
        array = array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)
        if mode in ("RGBA", "LA"):
            self._valid = array[-1] > 0
            array = array[:-1]
        else:
            self._valid = np.ones(array.shape[1:], dtype=bool)
        self._array = array[_select(array.shape[0], bands, name)]
        self.name = name
        self.count = self._array.shape[0]
        self.dtype = str(self._array.dtype)
        from affine import Affine

        self.grid = PixelGrid(None, Affine.identity(), array.shape[2], array.shape[1])

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """float32 (count, height, width) values of a window."""
        return self._array[:, row : row + height, col : col + width].astype(np.float32)

    def read_mask(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Validity of a window: bool (height, width), alpha > 0."""
        valid: np.ndarray = self._valid[row : row + height, col : col + width].copy()
        return valid

    def read_decimated(self, max_side: int) -> tuple[np.ndarray, np.ndarray]:
        """Every k-th pixel so that the result is at most ``max_side`` a side."""
        step = max(1, -(-max(self.grid.height, self.grid.width) // max_side))
        return (
            self._array[:, ::step, ::step].astype(np.float32),
            self._valid[::step, ::step].copy(),
        )


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
    same_origin = b.transform.almost_equals(a.transform, precision=_tolerance(a))
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
