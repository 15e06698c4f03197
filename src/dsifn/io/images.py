"""Reading image files: the one reader of pixels for datasets, evaluation and scenes.

An :class:`ImageSource` presents one date as a stack of bands on one pixel grid, however it is
stored, and reads windows of values with their validity (:class:`ImageData`):

- PNG, JPEG and BMP (:data:`PILLOW_SUFFIXES`) are decoded whole by Pillow
  (:class:`ArraySource`). Every Pillow mode is read: 8- and 16-bit grey, RGB, palette images
  as their colours (masks keep the indices), alpha as validity (a transparent pixel has no
  data), CMYK and other colour spaces converted to RGB.
- Everything else (TIFF, GeoTIFF, VRT, JPEG 2000, any GDAL raster, and GDAL dataset names that
  are not files: ``/vsicurl/https://...``, ``GPKG:x.gpkg:table``) goes through rasterio
  (:class:`RasterSource`): one multi-band file, or several band files at different
  resolutions (Sentinel-2's 10, 20 and 60 m bands) warped on the fly onto the finest grid with
  :class:`rasterio.vrt.WarpedVRT`.

One validity rule for every format: a pixel is valid where every selected band is valid: not
the nodata value (the file's own, and the one given), not masked by an alpha band or by GDAL's
internal or sidecar mask, covered by every band file, and, for floating-point data, finite
(NaN and infinity are nodata). Both dates of a pair are read together by
:mod:`dsifn.io.pairs`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from dsifn.errors import InputError
from dsifn.io.image_source import ImageData, ImageSource, MemorySource, PixelGrid
from dsifn.io.pillow_images import ArraySource, decode_pillow
from dsifn.io.raster_images import RasterSource, SourceName

__all__ = [
    "IMAGE_SUFFIXES",
    "PILLOW_SUFFIXES",
    "ArraySource",
    "ImageData",
    "ImageSource",
    "MemorySource",
    "PixelGrid",
    "RasterSource",
    "SourceName",
    "band_files",
    "decode_pillow",
    "is_plain",
    "open_image",
    "source_names",
]

# Files read whole with Pillow; a pair of them gives a PNG map.
PILLOW_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
# Files a dataset folder or a folder of scenes may hold (lower case); others are ignored.
IMAGE_SUFFIXES = (*PILLOW_SUFFIXES, ".tif", ".tiff")

# GDAL dataset names that are not paths: virtual file systems and DRIVER:... connections
# (two letters at least, so that a Windows drive letter stays a path).
_GDAL_NAME = re.compile(r"^(/vsi[a-z0-9_]+/|[A-Za-z][A-Za-z0-9_]+:)")
_URL = re.compile(r"^https?://", re.IGNORECASE)


def source_names(
    value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[SourceName]:
    """One date's files as a list: a path for each local file, text for other GDAL names.

    An ``http(s)://`` URL becomes ``/vsicurl/URL`` (read by windows, never downloaded whole).
    """
    values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    names: list[SourceName] = []
    for item in values:
        text = os.fspath(item)
        if _URL.match(text):
            names.append(f"/vsicurl/{text}")
        elif _GDAL_NAME.match(text):
            names.append(text)
        else:
            names.append(Path(text))
    return names


def is_plain(files: Sequence[SourceName]) -> bool:
    """Whether a date is one plain image (PNG/JPEG/BMP): read by Pillow, no georeference."""
    return (
        len(files) == 1
        and isinstance(files[0], Path)
        and files[0].suffix.lower() in PILLOW_SUFFIXES
    )


def band_files(
    paths: Sequence[SourceName], names: Sequence[str], what: str = "image"
) -> list[SourceName]:
    """The band files named ``names`` (``B04``...), in that order, among ``paths``.

    A file carries a band's name as the last ``_``-separated part of its stem
    (``T31UDQ_20180105_B04.tif``, ``B04.tif``).

    Raises:
        InputError: If a name matches no file or several.
    """
    found: dict[str, list[SourceName]] = {}
    for path in paths:
        token = Path(str(path)).stem.rsplit("_", 1)[-1].upper()
        found.setdefault(token, []).append(path)
    chosen = []
    for name in names:
        matches = found.get(name.upper(), [])
        if len(matches) != 1:
            shown = [Path(str(p)).name for p in paths[:3]]
            given = ", ".join(shown) + (", ..." if len(paths) > 3 else "")
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
        paths: One file, or several whose bands are stacked in the given order; GDAL dataset
            names and URLs are read by GDAL (:func:`source_names`).
        bands: 1-based band numbers to keep from the stack, in the order wanted, or band
            names (``B04``...) that pick band files (:func:`band_files`); None: all.
        nodata: Raw value that marks no data on any band, as well as the files' own marks.
        grid: Target grid for rasters (resampled onto it); None: the finest file's grid.
        resampling: How files off that grid are resampled (a rasterio resampling name).
        name: What to call this date in messages ("T1", "T2").

    Raises:
        InputError: If a file is missing or a band number is out of range.
        DataError: If a file cannot be read.
    """
    files = source_names(paths)
    numbers: Sequence[int] | None = None
    if bands is not None and all(isinstance(b, str) for b in bands):
        files = band_files(files, [str(b) for b in bands], name)
    elif bands is not None:
        numbers = [int(b) for b in bands]
    if is_plain(files):
        if grid is not None:
            raise InputError(f"{name}: a plain image has no georeference to resample it by")
        return ArraySource(files[0], bands=numbers, nodata=nodata, name=name)
    return RasterSource(
        files, bands=numbers, nodata=nodata, grid=grid, resampling=resampling, name=name
    )
