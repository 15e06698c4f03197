"""Reading image files: the one reader of pixels for datasets, evaluation and scenes.

An :class:`ImageSource` presents one date as a stack of bands on one pixel grid, however it is
stored, and is read by windows:

- PNG, JPEG and BMP (:data:`PILLOW_SUFFIXES`) are decoded whole by Pillow
  (:class:`ArraySource`). Every Pillow mode is read: 8- and 16-bit grey, RGB, palette images
  as their colours (masks keep the indices), alpha as validity (a transparent pixel has no
  data), CMYK and other colour spaces converted to RGB.
- Everything else (TIFF, GeoTIFF, VRT, any GDAL raster) goes through rasterio
  (:class:`RasterSource`): one multi-band file, or several band files at different resolutions
  (Sentinel-2's 10, 20 and 60 m bands) warped on the fly onto the finest grid with
  :class:`rasterio.vrt.WarpedVRT`.

A pixel is valid where every selected band is valid: not the nodata value (the file's own, or
the one given), not masked by an alpha band or an internal mask, and, for floating-point
data, finite (NaN and infinity are nodata).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsifn.errors import ConfigError, DataError, InputError

__all__ = [
    "IMAGE_SUFFIXES",
    "PILLOW_SUFFIXES",
    "ArraySource",
    "ImageSource",
    "MemorySource",
    "PixelGrid",
    "RasterSource",
    "band_files",
    "decode_pillow",
    "open_image",
    "parse_bands",
]

# Files read whole with Pillow; a pair of them gives a PNG map.
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Files a dataset folder or a folder of scenes may hold (lower case); others are ignored.
IMAGE_SUFFIXES = (*PILLOW_SUFFIXES, ".tif", ".tiff")


# A band's name in a file name, as Sentinel-2 products write it: ..._B04.tif, ..._B8A.jp2.
_BAND_NAME = re.compile(r"^B(\d{1,2}|8A)$", re.IGNORECASE)


def parse_bands(
    text: str | Sequence[int | str], option: str = "bands"
) -> tuple[int, ...] | tuple[str, ...]:
    """Bands from ``"4,3,2"`` (1-based numbers) or ``"B04,B03,B02"`` (names), or a list.

    Numbers pick bands of a file's (or a stack's) band list. Names pick band files by the
    name their file name carries (``*_B04.tif``; Sentinel-2's 13 bands B01 to B12 and B8A),
    in the order given; they are returned upper case.

    Raises:
        ConfigError: If the text is neither numbers of at least 1 nor band names.
    """
    parts = [str(p).strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    if parts and all(_BAND_NAME.match(p) for p in parts):
        return tuple(p.upper() for p in parts)
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise ConfigError(
            f"{option} takes 1-based band numbers such as 4,3,2 or band names such as "
            f"B04,B03,B02; got {text!r}"
        )
    return numbers


def band_files(paths: Sequence[Path], names: Sequence[str], what: str = "image") -> list[Path]:
    """The band files named ``names`` (``B04``...), in that order, among ``paths``.

    A file carries a band's name as the last ``_``-separated part of its stem
    (``T31UDQ_20180105_B04.tif``, ``B04.tif``).

    Raises:
        InputError: If a name matches no file or several.
    """
    found: dict[str, list[Path]] = {}
    for path in paths:
        token = path.stem.rsplit("_", 1)[-1].upper()
        found.setdefault(token, []).append(path)
    chosen = []
    for name in names:
        matches = found.get(name.upper(), [])
        if len(matches) != 1:
            given = ", ".join(p.name for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
            how = "no file" if not matches else f"{len(matches)} files"
            raise InputError(f"{what}: {how} of band {name} among {given}")
        chosen.append(matches[0])
    return chosen


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


class ImageSource:
    """One date as a band stack on a pixel grid, read by windows (interface)."""

    grid: PixelGrid
    count: int  # bands after selection
    dtype: str  # numpy dtype of the raw values
    name: str  # for messages and metadata

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """(count, height, width) raw values of a window inside the grid, in :attr:`dtype`."""
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

    def read_all(self) -> tuple[np.ndarray, np.ndarray]:
        """The whole image: (count, H, W) raw values and bool (H, W) validity."""
        h, w = self.grid.height, self.grid.width
        return self.read(0, 0, h, w), self.read_mask(0, 0, h, w)

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


def open_image(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    bands: Sequence[int] | Sequence[str] | None = None,
    nodata: float | None = None,
    grid: PixelGrid | None = None,
    resampling: str = "bilinear",
    name: str = "image",
) -> ImageSource:
    """Open one date: a PNG/JPEG/BMP, a raster, or several band files stacked in order.

    Args:
        paths: One file, or several whose bands are stacked in the given order.
        bands: 1-based band numbers to keep from the stack, in the order wanted, or band
            names (``B04``...) that pick band files (:func:`band_files`); None: all.
        nodata: Raw value that marks no data on any band, instead of the files' own marks.
        grid: Target grid for rasters (resampled onto it); None: the finest file's grid.
        resampling: How files off that grid are resampled (a rasterio resampling name).
        name: What to call this date in messages ("T1", "T2").

    Raises:
        InputError: If a file is missing or a band number is out of range.
        DataError: If a file cannot be read.
    """
    files = [Path(paths)] if isinstance(paths, (str, os.PathLike)) else [Path(p) for p in paths]
    numbers: Sequence[int] | None = None
    if bands is not None and all(isinstance(b, str) for b in bands):
        files = band_files(files, [str(b) for b in bands], name)
    elif bands is not None:
        numbers = [int(b) for b in bands]
    if len(files) == 1 and files[0].suffix.lower() in PILLOW_SUFFIXES:
        if grid is not None:
            raise InputError(f"{name}: a plain image has no georeference to resample it by")
        return ArraySource(files[0], bands=numbers, nodata=nodata, name=name)
    return RasterSource(
        files, bands=numbers, nodata=nodata, grid=grid, resampling=resampling, name=name
    )


def _check_file(path: Path, name: str) -> None:
    if path.is_dir():
        raise InputError(f"{name} file {path} is a folder, not an image file")
    if not path.is_file():
        raise InputError(f"{name} file {path} does not exist")


def _select(count: int, bands: Sequence[int] | None, name: str) -> list[int]:
    if bands is None:
        return list(range(count))
    bad = [b for b in bands if not 1 <= b <= count]
    if bad:
        raise InputError(f"{name} has {count} band(s); band {bad[0]} is out of range 1..{count}")
    return [b - 1 for b in bands]


def _valid(values: np.ndarray, nodata: float | None) -> np.ndarray:
    # (C, h, w) raw values -> (h, w) True where no band is nodata or non-finite.
    valid = np.ones(values.shape[1:], dtype=bool)
    if np.issubdtype(values.dtype, np.floating):
        valid &= np.isfinite(values).all(axis=0)
    if nodata is not None and not np.isnan(nodata):
        valid &= ~(values == nodata).any(axis=0)
    return valid


def _decimated_shape(grid: PixelGrid, max_side: int) -> tuple[int, int]:
    factor = max(grid.height, grid.width) / max_side
    if factor <= 1:
        return grid.height, grid.width
    return max(1, round(grid.height / factor)), max(1, round(grid.width / factor))


def decode_pillow(path: Path, *, keep_palette: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Decode a Pillow-readable file whole.

    Args:
        path: A PNG, JPEG or BMP file.
        keep_palette: Return a palette image's indices (for masks, where the index is the
            class) instead of its colours.

    Returns:
        (C, H, W) values in the file's type (16-bit PNGs as uint16) and bool (H, W) validity
        (False where alpha is 0).

    Raises:
        DataError: If the file cannot be decoded.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            array, valid = _pillow_array(image, keep_palette)
    except Exception as exc:  # any decoder failure is the file's fault, not ours
        raise DataError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    if array.ndim == 2:
        array = array[None]
    else:
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
    if array.dtype == np.int32 and array.size and 0 <= array.min() and array.max() <= 65535:
        array = array.astype(np.uint16)  # Pillow opens 16-bit PNGs as 32-bit "I"
    elif array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    return array, valid


def _pillow_array(image: Any, keep_palette: bool) -> tuple[np.ndarray, np.ndarray]:
    mode = image.mode
    if mode == "P" and keep_palette and "transparency" not in image.info:
        indices = np.asarray(image)
        return indices, np.ones(indices.shape, dtype=bool)
    if mode in ("P", "PA"):
        image = image.convert("RGBA" if mode == "PA" or "transparency" in image.info else "RGB")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA", "I", "F") and not mode.startswith("I;16"):
        image = image.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX...
    valid: np.ndarray
    if image.mode in ("RGBA", "LA"):
        # Alpha is not a band of the scene; a transparent pixel is a pixel without data.
        valid = np.asarray(image.getchannel("A")) > 0
        image = image.convert("RGB" if image.mode == "RGBA" else "L")
    else:
        valid = np.ones((image.height, image.width), dtype=bool)
    return np.asarray(image), valid


class MemorySource(ImageSource):
    """A date already in memory, for running arrays through the tile loop.

    Args:
        values: (C, H, W) values (already scaled, for evaluation's images).
        valid: bool (H, W) validity; None: every pixel valid.
        name: What to call this date in messages.
    """

    def __init__(
        self, values: np.ndarray, valid: np.ndarray | None = None, name: str = "image"
    ) -> None:
        from affine import Affine

        self._array = values
        self._valid = np.ones(values.shape[1:], dtype=bool) if valid is None else valid
        self.name = name
        self.count = int(values.shape[0])
        self.dtype = str(values.dtype)
        self.grid = PixelGrid(None, Affine.identity(), int(values.shape[2]), int(values.shape[1]))

    def read(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """(count, height, width) values of a window (a copy), in the source's type."""
        window: np.ndarray = self._array[:, row : row + height, col : col + width].copy()
        return window

    def read_mask(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Validity of a window: bool (height, width)."""
        valid: np.ndarray = self._valid[row : row + height, col : col + width].copy()
        return valid

    def read_decimated(self, max_side: int) -> tuple[np.ndarray, np.ndarray]:
        """Every k-th pixel so that the result is at most ``max_side`` a side."""
        step = max(1, -(-max(self.grid.height, self.grid.width) // max_side))
        values = self._array[:, ::step, ::step].astype(np.float32)
        return values, self._valid[::step, ::step].copy()


class ArraySource(MemorySource):
    """A PNG, JPEG or BMP decoded whole by Pillow (:func:`decode_pillow`).

    Args:
        path: The image file.
        bands: 1-based band numbers to keep; None: all colour bands.
        nodata: Raw value that marks no data on any band.
        name: What to call this date in messages.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        bands: Sequence[int] | None = None,
        nodata: float | None = None,
        name: str = "image",
    ) -> None:
        file = Path(path)
        _check_file(file, name)
        try:
            array, valid = decode_pillow(file)
        except DataError as exc:
            detail = " ".join(str(exc.__cause__ or exc).split())
            raise DataError(f"{name} file {file} is not a readable image: {detail}") from exc
        selected = array[_select(array.shape[0], bands, name)]
        super().__init__(selected, valid & _valid(selected, nodata), name=name)
        self.paths = [file]


class RasterSource(ImageSource):
    """One date from one or more raster files, stacked in order and put on one grid.

    Args:
        paths: One multi-band file, or several files whose bands are stacked in the given
            order.
        bands: 1-based band numbers to keep from the stack, in the order wanted; None: all.
        nodata: Raw value that marks no data on any band, instead of the files' own masks.
        grid: Target grid; None: the grid of the finest-resolution file (of the only file).
        resampling: Resampling name for files not on the target grid.
        name: What to call this date in messages ("T1", "T2").
    """

    def __init__(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        bands: Sequence[int] | None = None,
        nodata: float | None = None,
        grid: PixelGrid | None = None,
        resampling: str = "bilinear",
        name: str = "image",
    ) -> None:
        if not paths:
            raise InputError(f"no file given for {name}")
        self._options: dict[str, Any] = {
            "bands": bands,
            "nodata": nodata,
            "resampling": resampling,
            "name": name,
        }
        self.name = name
        self.nodata = nodata
        self.paths = [Path(p) for p in paths]
        self._files: list[Any] = []
        self._layers: list[Any] = []
        try:
            self._open(grid, resampling)
            # The files' band counts: a warped layer's extra alpha band is coverage, not data.
            stack = [
                (layer, b)
                for layer, file in zip(self._layers, self._files, strict=True)
                for b in range(1, file.count + 1)
            ]
            self._bands = [stack[i] for i in _select(len(stack), bands, name)]
            self.count = len(self._bands)
            self.dtype = str(np.result_type(*[layer.dtypes[b - 1] for layer, b in self._bands]))
        except BaseException:
            self.close()
            raise
        self._float = bool(np.issubdtype(np.dtype(self.dtype), np.floating))

    def _open(self, grid: PixelGrid | None, resampling: str) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        for path in self.paths:
            _check_file(path, self.name)
            try:
                with warnings.catch_warnings():
                    # Plain TIFF tiles of public datasets carry no georeference; that is fine.
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    self._files.append(rasterio.open(path))
            except RasterioIOError as exc:
                raise DataError(f"{self.name} file {path} is not a readable raster: {exc}") from exc
        if grid is None:
            finest = min(self._files, key=lambda f: abs(f.transform.a * f.transform.e))
            grid = PixelGrid(finest.crs, finest.transform, finest.width, finest.height)
        self.grid = grid
        self._layers = [self._on_grid(f, resampling) for f in self._files]

    def _on_grid(self, file: Any, resampling: str) -> Any:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        grid = self.grid
        if file.crs is None and len(self._files) > 1:
            raise DataError(f"{self.name} file {file.name} has no CRS: cannot stack it")
        on_grid = (
            file.crs == grid.crs
            and file.width == grid.width
            and file.height == grid.height
            and file.transform.almost_equals(grid.transform, precision=grid.tolerance)
        )
        if on_grid:
            return file
        if file.crs is None or grid.crs is None:
            raise DataError(f"{self.name} file {file.name} has no CRS: cannot resample it")
        return WarpedVRT(
            file,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=Resampling[resampling],
            # Pixels of the grid the file does not cover get alpha 0, so read_masks reports
            # them invalid instead of passing zero-filled values as data.
            add_alpha=True,
        )

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
        """(count, height, width) raw values of a window inside the grid, in :attr:`dtype`."""
        return self._read(height, width, window=(row, col))

    def _read(self, height: int, width: int, *, window: tuple[int, int] | None) -> np.ndarray:
        out = np.empty((self.count, height, width), dtype=self.dtype)
        for layer, bands, positions in self._groups():
            out[positions] = self._layer_read(layer.read, bands, height, width, window)
        return out

    def _layer_read(
        self,
        read: Any,
        bands: int | list[int],
        height: int,
        width: int,
        window: tuple[int, int] | None,
    ) -> np.ndarray:
        """One read (``layer.read`` or ``layer.read_masks``) of a window, or of the whole grid.

        With ``window`` None the whole grid is read decimated to (height, width). A failed
        read means a corrupt or truncated file.
        """
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        try:
            if window is None:
                count = () if isinstance(bands, int) else (len(bands),)
                return np.asarray(read(bands, out_shape=(*count, height, width)))
            return np.asarray(read(bands, window=Window(window[1], window[0], width, height)))
        except RasterioError as exc:
            raise self._corrupt(exc) from exc

    def _corrupt(self, exc: Exception) -> DataError:
        files = " ".join(str(p) for p in self.paths)
        detail = " ".join(str(exc).split())
        return DataError(f"{self.name} file {files} is corrupt or truncated: {detail}")

    def read_mask(self, row: int, col: int, height: int, width: int) -> np.ndarray:
        """Validity of a window: bool (height, width), True where every selected band is valid."""
        return self._mask(height, width, window=(row, col))

    def _mask(self, height: int, width: int, *, window: tuple[int, int] | None) -> np.ndarray:
        if self.nodata is not None or self._float:
            valid = _valid(self._read(height, width, window=window), self.nodata)
            if self.nodata is not None:
                covered: np.ndarray = valid & self._coverage(height, width, window=window)
                return covered
        else:
            valid = np.ones((height, width), dtype=bool)
        for layer, bands, _ in self._groups():
            masks = self._layer_read(layer.read_masks, bands, height, width, window)
            valid &= np.all(masks > 0, axis=0)
        return valid

    def read_decimated(self, max_side: int) -> tuple[np.ndarray, np.ndarray]:
        """Whole scene shrunk to at most ``max_side`` a side: (count, h, w) values, (h, w) mask."""
        h, w = _decimated_shape(self.grid, max_side)
        values = self._read(h, w, window=None).astype(np.float32)
        return values, self._mask(h, w, window=None)

    def _coverage(self, height: int, width: int, *, window: tuple[int, int] | None) -> np.ndarray:
        """Where every warped file covers the grid: bool (height, width), from the VRT's alpha."""
        covered = np.ones((height, width), dtype=bool)
        for layer, file in zip(self._layers, self._files, strict=True):
            if layer is not file:
                covered &= self._layer_read(layer.read, layer.count, height, width, window) > 0
        return covered

    def close(self) -> None:
        """Close the files and any warped views of them."""
        for layer in self._layers:
            if layer not in self._files:
                layer.close()
        for f in self._files:
            f.close()
        self._files = []
        self._layers = []
