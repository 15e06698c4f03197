"""Reading image and mask files, and turning raw values into [0, 1] images and 0/1 masks.

PNG, JPEG and BMP are read through Pillow; TIFF and GeoTIFF (any band count, any dtype)
through rasterio. The decoding of raw arrays (:func:`scale_to_unit`, :func:`decode_mask`,
:func:`select_bands`) is pure and works without files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from dsifn.errors import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "Raster",
    "decode_mask",
    "read_mask",
    "read_raster",
    "scale_to_unit",
    "select_bands",
]

# Suffixes (lower case) of the files a dataset folder may hold; anything else is ignored.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
_TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class Raster:
    """Raw pixels of one file.

    Attributes:
        data: (C, H, W) array in the file's dtype (alpha removed).
        nodata: (H, W) bool array, True where the file says there is no data (a GeoTIFF nodata
            value on every band, or a transparent pixel), or None if the file has no such mark.
        palette: Whether ``data`` holds palette indices rather than colours.
    """

    data: NDArray[Any]
    nodata: NDArray[np.bool_] | None = None
    palette: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        c, h, w = self.data.shape
        return int(c), int(h), int(w)


def read_raster(path: Path, *, nodata: float | None = None, keep_palette: bool = False) -> Raster:
    """Read one image file with every band.

    Args:
        path: A PNG, JPEG, BMP or TIFF file.
        nodata: Raw value meaning "no data" on every band; None uses the file's own tag.
        keep_palette: Return a palette image's indices (for masks, where the index is the
            class) instead of its colours.

    Returns:
        The raw pixels, (C, H, W), in the file's dtype.

    Raises:
        DataError: If the file cannot be read.
    """
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            raster = _read_tiff(path, nodata)
        else:
            raster = _read_pillow(path, nodata, keep_palette)
    except DataError:
        raise
    except Exception as exc:  # any decoder failure is the file's fault, not ours
        raise DataError(f"cannot read {path}: {' '.join(str(exc).split())}") from exc
    return raster


def _read_tiff(path: Path, nodata: float | None) -> Raster:
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        # Plain TIFF tiles of public datasets carry no georeference; that is fine here.
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            data = src.read()
            tag = src.nodata
    value = nodata if nodata is not None else tag
    mask = _nodata_mask(data, value)
    return Raster(data=data, nodata=mask)


def _read_pillow(path: Path, nodata: float | None, keep_palette: bool) -> Raster:
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        mode = image.mode
        alpha = None
        if mode == "P":
            if "transparency" in image.info:
                image = image.convert("RGBA")
                mode = "RGBA"
            elif not keep_palette:
                image = image.convert("RGB")
                mode = "RGB"
            else:
                indices = np.asarray(image)[None]
                return Raster(data=indices, nodata=_nodata_mask(indices, nodata), palette=True)
        if mode in ("RGBA", "LA", "PA"):
            # Alpha is not a band of the scene; a transparent pixel is a pixel without data.
            alpha = np.asarray(image.getchannel("A")) == 0
            image = image.convert("RGB" if mode != "LA" else "L")
        elif mode == "1":
            image = image.convert("L")
        elif mode not in ("L", "RGB", "I", "F") and not mode.startswith("I;16"):
            image = image.convert("RGB")
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[None]
    else:
        array = np.ascontiguousarray(array.transpose(2, 0, 1))
    if array.dtype == np.int32 and array.size and 0 <= array.min() and array.max() <= 65535:
        # Pillow opens some 16-bit PNGs as 32-bit; the file's true type is uint16.
        array = array.astype(np.uint16)
    elif array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("="))
    mask = _nodata_mask(array, nodata)
    if alpha is not None:
        mask = alpha if mask is None else mask | alpha
    return Raster(data=array, nodata=mask)


def _nodata_mask(data: NDArray[Any], value: float | None) -> NDArray[np.bool_] | None:
    if value is None:
        return None
    if np.isnan(value):
        return np.asarray(np.isnan(data).all(axis=0))
    return np.asarray((data == value).all(axis=0))


def select_bands(data: NDArray[Any], bands: tuple[int, ...] | None, path: Path) -> NDArray[Any]:
    """Pick 1-based ``bands`` from a (C, H, W) array.

    Args:
        data: (C, H, W) raw pixels.
        bands: 1-based band numbers, in the order wanted; None keeps all bands.
        path: The file the pixels came from, for the error message.

    Returns:
        (len(bands), H, W) array (``data`` itself when ``bands`` is None).

    Raises:
        DataError: If a band number is beyond the file's band count.
    """
    if bands is None:
        return data
    count = data.shape[0]
    if max(bands) > count:
        raise DataError(
            f"{path} has {count} band(s); data.bands asks for band(s) "
            f"{', '.join(str(b) for b in bands if b > count)}"
        )
    return data[[b - 1 for b in bands]]


def scale_to_unit(data: NDArray[Any], scale: float | None = None) -> NDArray[np.float32]:
    """Scale raw pixel values to [0, 1] (the rule of :class:`~dsifn.data.DataConfig`).

    Args:
        data: Raw pixels of any shape and dtype.
        scale: The raw value that maps to 1.0; None chooses by dtype: integers are divided by
            their type's maximum (uint8 by 255, uint16 by 65535), booleans become 0/1 and
            floating-point values are kept unchanged.

    Returns:
        float32 array of the same shape; clipped to [0, 1] unless the input is floating-point
        and ``scale`` is None.
    """
    if data.dtype == np.bool_:
        return data.astype(np.float32)
    if scale is None:
        if np.issubdtype(data.dtype, np.floating):
            unchanged: NDArray[np.float32] = data.astype(np.float32)
            return unchanged
        scale = float(np.iinfo(data.dtype).max)
    out: NDArray[np.float32] = data.astype(np.float32) / np.float32(scale)
    np.clip(out, 0.0, 1.0, out=out)
    return out


def decode_mask(
    data: NDArray[Any], *, ignore_value: int | None = None, threshold: float = 0
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Turn a raw mask into 0/1 change and a valid map.

    Any value above ``threshold`` (0) is change: 0/1 and 0/255 codings read alike. A colour
    mask (several bands) is change where any band is above it. Palette masks are decoded by
    their indices (index 0 is no change), so ``ignore_value`` refers to an index there.

    Args:
        data: (C, H, W) raw mask, C = 1 (grey or palette indices) or 3 (colours).
        ignore_value: Raw value meaning "not labelled" (on every band, for colour masks).
        threshold: Values above it are change.

    Returns:
        ``(mask, valid)``: (1, H, W) float32 0/1 and (1, H, W) bool. Change is 0 where the
        label is ignored.
    """
    change = np.asarray(np.any(data > threshold, axis=0, keepdims=True), dtype=np.bool_)
    valid: NDArray[np.bool_] = np.ones(change.shape, dtype=np.bool_)
    if ignore_value is not None:
        valid = ~np.asarray(np.all(data == ignore_value, axis=0, keepdims=True), dtype=np.bool_)
        change &= valid
    return change.astype(np.float32), valid


def read_mask(
    path: Path, *, ignore_value: int | None = None
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Read and decode a mask file (see :func:`decode_mask`).

    JPEG masks (CDD ships them) are change above 127, since compression noise turns some 0s
    into small values; every other format is change above 0.

    Args:
        path: A PNG, BMP, JPEG or TIFF mask.
        ignore_value: Raw value meaning "not labelled".

    Returns:
        ``(mask, valid)``: (1, H, W) float32 0/1 and (1, H, W) bool.

    Raises:
        DataError: If the file cannot be read or has a band count no mask has.
    """
    raster = read_raster(path, keep_palette=True)
    data = raster.data
    if data.shape[0] == 4:  # colours plus alpha (TIFF); alpha says nothing about change
        data = data[:3]
    if data.shape[0] not in (1, 3):
        raise DataError(f"{path} has {data.shape[0]} bands; a mask has 1 (or 3 colours)")
    # JPEG is lossy: the 0 of a 0/255 mask comes back as small values near edges, so there
    # change is the upper half of the range.
    threshold = 127 if path.suffix.lower() in (".jpg", ".jpeg") else 0
    return decode_mask(data, ignore_value=ignore_value, threshold=threshold)
