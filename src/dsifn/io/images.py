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
from collections.abc import Sequence
from pathlib import Path

from dsifn.errors import ConfigError, InputError
from dsifn.io.image_source import ImageSource, MemorySource, PixelGrid
from dsifn.io.pillow_images import ArraySource, decode_pillow
from dsifn.io.raster_images import RasterSource

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
