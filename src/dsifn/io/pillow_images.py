"""PNG, JPEG and BMP through Pillow: every mode decoded to bands and validity."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsifn.errors import DataError, InputError
from dsifn.io.atomic import check_input_file
from dsifn.io.image_source import MemorySource, select_bands, valid_pixels

__all__ = ["ArraySource", "decode_pillow"]


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


class ArraySource(MemorySource):
    """A PNG, JPEG or BMP decoded whole by Pillow (:func:`decode_pillow`).

    Args:
        path: The image file.
        bands: 1-based band numbers to keep; None: all colour bands.
        nodata: Raw value that marks no data on any band, as well as alpha 0.
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
        check_input_file(file, f"{name} file", InputError)
        try:
            array, valid = decode_pillow(file)
        except DataError as exc:
            detail = " ".join(str(exc.__cause__ or exc).split())
            raise DataError(f"{name} file {file} is not a readable image: {detail}") from exc
        selected = array[select_bands(array.shape[0], bands, name)]
        super().__init__(selected, valid & valid_pixels(selected, nodata), name=name)
        self.paths = [file]
