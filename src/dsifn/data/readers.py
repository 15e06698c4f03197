"""Reading change masks: 0/1, 0/255, colour and palette labels to 0/1 change and validity.

Mask files are read by the package's one reader of pixels (:mod:`dsifn.io.images`); only the
decoding of labels lives here. :func:`decode_mask` is pure and works without files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray

from dsifn._validation import check_choice
from dsifn.errors import DataError
from dsifn.io.images import PILLOW_SUFFIXES, decode_pillow, open_image

__all__ = ["LabelCoding", "decode_mask", "read_mask"]

# How a layout's mask files code their labels. "change>0": any value above the threshold is
# change (0/1, 0/255, colours, palette indices). "oscd": OSCD's change-map GeoTIFFs, 1 = no
# change and 2 = change (its LABELS_README says otherwise; the files say this), any other
# value not labelled.
LabelCoding = Literal["change>0", "oscd"]


def decode_mask(
    data: NDArray[Any],
    *,
    ignore_value: int | None = None,
    threshold: float = 0,
    coding: LabelCoding = "change>0",
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Turn a raw mask into 0/1 change and a valid map.

    With the ``"change>0"`` coding any value above ``threshold`` (0) is change: 0/1 and 0/255
    codings read alike. A colour mask (several bands) is change where any band is above it.
    Palette masks are decoded by their indices (index 0 is no change), so ``ignore_value``
    refers to an index there. With the ``"oscd"`` coding 2 is change, 1 no change and every
    other value (0 at the borders of some change maps) not labelled. In a floating-point label,
    NaN and infinity are not labelled, as ``ignore_value`` is.

    Args:
        data: (C, H, W) raw mask, C = 1 (grey or palette indices) or 3 (colours).
        ignore_value: Raw value meaning "not labelled" (on every band, for colour masks).
        threshold: Values above it are change (``"change>0"`` coding).
        coding: How the values code the labels (:data:`LabelCoding`).

    Returns:
        ``(mask, valid)``: (1, H, W) float32 0/1 and (1, H, W) bool. Change is 0 where the
        label is ignored.
    """
    check_choice("label coding", coding, get_args(LabelCoding))
    valid: NDArray[np.bool_]
    if coding == "oscd":
        change = np.asarray(np.any(data == 2, axis=0, keepdims=True), dtype=np.bool_)
        valid = np.asarray(np.all((data == 1) | (data == 2), axis=0, keepdims=True))
    else:
        change = np.asarray(np.any(data > threshold, axis=0, keepdims=True), dtype=np.bool_)
        valid = np.ones(change.shape, dtype=np.bool_)
    if ignore_value is not None:
        valid &= ~np.asarray(np.all(data == ignore_value, axis=0, keepdims=True), dtype=np.bool_)
    if np.issubdtype(data.dtype, np.floating):  # NaN (or infinity) in a float label: unlabelled
        valid &= np.all(np.isfinite(data), axis=0, keepdims=True)
    change &= valid
    return change.astype(np.float32), valid


def read_mask(
    path: Path, *, ignore_value: int | None = None, coding: LabelCoding = "change>0"
) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """Read and decode a mask file (see :func:`decode_mask`).

    JPEG masks (CDD ships them) are change above 127, since compression noise turns some 0s
    into small values; every other format is change above 0.

    Args:
        path: A PNG, BMP, JPEG or TIFF mask.
        ignore_value: Raw value meaning "not labelled".
        coding: How the values code the labels; the layout knows (OSCD's ``.tif``: ``"oscd"``).

    Returns:
        ``(mask, valid)``: (1, H, W) float32 0/1 and (1, H, W) bool.

    Raises:
        DataError: If the file cannot be read or has a band count no mask has.
    """
    if path.suffix.lower() in PILLOW_SUFFIXES:
        data, _ = decode_pillow(path, keep_palette=True)
    else:
        with open_image(path, name="mask") as source:
            data = source.read_all().values
    if data.shape[0] == 4:  # colours plus alpha (TIFF); alpha says nothing about change
        data = data[:3]
    if data.shape[0] not in (1, 3):
        raise DataError(f"{path} has {data.shape[0]} bands; a mask has 1 (or 3 colours)")
    # JPEG is lossy: the 0 of a 0/255 mask comes back as small values near edges, so there
    # change is the upper half of the range.
    threshold = 127 if path.suffix.lower() in (".jpg", ".jpeg") else 0
    return decode_mask(data, ignore_value=ignore_value, threshold=threshold, coding=coding)
