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
- Sentinel-2 as it is distributed, with band names (``B04``, ``red``) to pick its files: a
  folder of band files, a SAFE product's folder (``GRANULE/*/IMG_DATA``, L2A's ``R10m`` ...
  ``R60m``: each band at its finest resolution), or a STAC item (:mod:`dsifn.io.stac`). What
  a product states about its digital numbers (SAFE metadata, STAC ``raster:bands``, file
  tags) travels with the source (:mod:`dsifn.io.radiometry`).

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

from dsifn.bands import band_id, band_in_name, resolution_in_name
from dsifn.errors import InputError
from dsifn.io import stac
from dsifn.io.image_source import ImageData, ImageSource, MemorySource, PixelGrid
from dsifn.io.pillow_images import ArraySource, decode_pillow
from dsifn.io.radiometry import Conversion, product_hint, safe_conversion
from dsifn.io.raster_images import RasterSource, SourceName, url_name

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
# Band files a folder given as one date (a SAFE product's IMG_DATA) may hold.
BAND_FILE_SUFFIXES = (".tif", ".tiff", ".jp2")

# GDAL dataset names that are not paths: virtual file systems and DRIVER:... connections
# (two letters at least, so that a Windows drive letter stays a path).
_GDAL_NAME = re.compile(r"^(/vsi[a-z0-9_]+/|[A-Za-z][A-Za-z0-9_]+:)")


def source_names(
    value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[SourceName]:
    """One date's files as a list: a path for each local file, text for other GDAL names.

    An ``http(s)://`` URL becomes ``/vsicurl/URL`` (read by windows, never downloaded whole),
    but a STAC item's URL (:func:`dsifn.io.stac.is_item`) stays as it is.
    """
    values = [value] if isinstance(value, (str, os.PathLike)) else list(value)
    names: list[SourceName] = []
    for item in values:
        text = os.fspath(item)
        remote = url_name(text)
        if remote is not None and stac.is_item(text):
            names.append(text)
        elif remote is not None:
            names.append(remote)
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
    """The band files of bands ``names`` (``B04``, ``B4``, ``red``...), in that order.

    A file carries its band in its name (:func:`dsifn.bands.band_in_name`:
    ``T31UDQ_20180105_B04.tif``, ``T31UDQ_20230601T105441_B04_10m.jp2``, ``B04.tif``). A band
    found at several resolutions (a SAFE L2A product's ``_B02_10m`` and ``_B02_20m``) is
    taken at the finest.

    Raises:
        InputError: If a name matches no file or several, naming the files.
    """
    found: dict[str, list[SourceName]] = {}
    for path in paths:
        band = band_in_name(Path(str(path)).name)
        if band is not None:
            found.setdefault(band, []).append(path)
    chosen = []
    for name in names:
        wanted = band_id(name) or name.upper()
        matches = _finest(found.get(wanted, []))
        if len(matches) == 1:
            chosen.append(matches[0])
            continue
        if matches:
            listed = ", ".join(Path(str(p)).name for p in matches)
            raise InputError(f"{what}: band {wanted} matches {len(matches)} files: {listed}")
        shown = ", ".join(Path(str(p)).name for p in paths[:4])
        more = f" and {len(paths) - 4} more" if len(paths) > 4 else ""
        raise InputError(f"{what}: no file of band {wanted} among {shown or 'no files'}{more}")
    return chosen


def _finest(matches: list[SourceName]) -> list[SourceName]:
    """Of one band's files, those of the finest resolution their names state (all if none)."""
    sizes = [resolution_in_name(Path(str(p)).name) for p in matches]
    if len(matches) < 2 or None in sizes or len(set(sizes)) != len(sizes):
        return matches
    return [matches[sizes.index(min(s for s in sizes if s is not None))]]


def _folder_files(folder: Path) -> list[SourceName]:
    """The band files of a folder given as a date: a SAFE product's, or the folder's own."""
    granules = sorted(folder.glob("GRANULE/*/IMG_DATA"))
    if granules:  # a SAFE product: L1C's IMG_DATA/*.jp2, L2A's IMG_DATA/R10m/*.jp2 ...
        candidates = sorted(p for g in granules for p in g.rglob("*") if p.is_file())
    else:
        candidates = sorted(p for p in folder.iterdir() if p.is_file())
    return [p for p in candidates if p.suffix.lower() in BAND_FILE_SUFFIXES]


def _by_name(
    files: list[SourceName], names: list[str], what: str
) -> tuple[list[SourceName], list[Conversion | None] | None, str | None]:
    """Band files picked by band name from files, folders or a STAC item.

    Returns:
        The files in the order of ``names``, what is stated of them beyond their own tags
        (a STAC item's ``raster:bands``, a SAFE product's metadata; None: nothing), and why
        their names say they are a product of baseline 04.00 or later.
    """
    if len(files) == 1 and stac.is_item(str(files[0])):
        # band_files reads names as band_id does; a STAC item is searched by the ids.
        found = stac.item_bands(files[0], [band_id(n) or n.upper() for n in names], what)
        return found.files, found.stated, found.hint
    expanded: list[SourceName] = []
    for file in files:
        folder = isinstance(file, Path) and file.is_dir()
        expanded.extend(_folder_files(file) if folder else [file])  # type: ignore[arg-type]
    chosen = band_files(expanded, names, what)
    stated = [safe_conversion(p) if isinstance(p, Path) else None for p in chosen]
    hint = product_hint([str(p) for p in chosen])
    return chosen, (stated if any(stated) else None), hint


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
            names and URLs are read by GDAL (:func:`source_names`); with band names, also
            folders of band files, SAFE products and STAC items.
        bands: 1-based band numbers to keep from the stack, in the order wanted, or band
            names (``B04``, ``red``...) that pick band files (:func:`band_files`) from
            the files, folders (a SAFE product) or STAC item given; None: all.
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
    stated: list[Conversion | None] | None = None
    if bands is not None and all(isinstance(b, str) for b in bands):
        files, stated, hint = _by_name(files, [str(b) for b in bands], name)
    else:
        _check_named(files, name)
        numbers = None if bands is None else [int(b) for b in bands]
        hint = product_hint([str(p) for p in files])
    if is_plain(files):
        if grid is not None:
            raise InputError(f"{name}: a plain image has no georeference to resample it by")
        return ArraySource(files[0], bands=numbers, nodata=nodata, name=name)
    return RasterSource(
        files,
        bands=numbers,
        nodata=nodata,
        grid=grid,
        resampling=resampling,
        name=name,
        stated=stated,
        hint=hint,
    )


def _check_named(files: Sequence[SourceName], name: str) -> None:
    """Refuse a folder or a STAC item where no band names say which of its files to read."""
    for file in files:
        if isinstance(file, Path) and file.is_dir():
            raise InputError(
                f"{name}: {file} is a folder, not a file; to read its band files (a SAFE "
                "product, a folder of band files) name the bands, e.g. `bands=B04,B03,B02`"
            )
        if stac.is_item(str(file)):
            raise InputError(
                f"{name}: {file} is a STAC item; name the bands to read from its assets, e.g. "
                "`bands=B04,B03,B02`"
            )
