"""Band lists as users write them: 1-based numbers (``4,3,2``) or band names (``B04``, ``red``).

Parsing happens once, where an option or a configuration is read; what is parsed travels as a
tuple of numbers or a tuple of band ids (``B04``, ``B8A``), and the readers of :mod:`dsifn.io`
take it as it is. A band id is spelt one way whatever the user typed: ``B4``, ``b04`` and
``B04`` are ``B04``, and Sentinel-2's common names (STAC's ``eo:common_name``: ``red``,
``nir08``, ``swir16`` ...) are aliases of the ids (:data:`COMMON_NAMES`). The same rule finds
the band a file carries in its name (:func:`band_in_name`): ``B04.tif``,
``T31UDQ_20230601T105441_B04_10m.jp2`` and ``S2A_OPER_MSI_L1C_TL_..._B04.tif`` all hold B04.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dsifn.errors import ConfigError

__all__ = [
    "COMMON_NAMES",
    "SENTINEL2_BANDS",
    "BandList",
    "band_id",
    "band_in_name",
    "parse_bands",
    "resolution_in_name",
]

# What a band selection is once parsed: 1-based numbers, or band ids picking band files.
BandList = tuple[int, ...] | tuple[str, ...]

# Sentinel-2's 13 bands in the order of its products' band_id 0..12 (and of OSCD).
SENTINEL2_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip

# Sentinel-2's common names (STAC eo extension), aliases of the band ids.
COMMON_NAMES = {
    "coastal": "B01",
    "blue": "B02",
    "green": "B03",
    "red": "B04",
    "rededge1": "B05",
    "rededge2": "B06",
    "rededge3": "B07",
    "nir": "B08",
    "nir08": "B8A",
    "nir09": "B09",
    "cirrus": "B10",
    "swir16": "B11",
    "swir22": "B12",
}

# A band id as products write it: B4, B04, B8A (and other sensors' B1 ... B99).
_BAND_ID = re.compile(r"^B(\d{1,2}|8A)$", re.IGNORECASE)
# A resolution as Sentinel-2 L2A file names carry it: ..._B04_10m.jp2.
_RESOLUTION = re.compile(r"^(\d{1,4})m$", re.IGNORECASE)


def band_id(text: str) -> str | None:
    """The band id ``text`` names: ``"B4"``, ``"b04"`` -> ``"B04"``; ``"red"`` -> ``"B04"``.

    Returns:
        The id, or None when ``text`` names no band.
    """
    word = text.strip()
    common = COMMON_NAMES.get(word.lower())
    if common is not None:
        return common
    found = _BAND_ID.match(word)
    if found is None:
        return None
    number = found[1].upper()
    return "B8A" if number == "8A" else f"B{int(number):02d}"


def _name_parts(file_name: str) -> list[str]:
    # The stem (the name without its last suffix) cut at underscores.
    return file_name.rsplit(".", 1)[0].split("_")


def band_in_name(file_name: str) -> str | None:
    """The band id a file's name carries: its last ``_``-separated part that names a band.

    ``T31UDQ_20230601T105441_B04_10m.jp2`` -> ``B04``; ``B8A.tif`` -> ``B8A``; ``red.tif`` ->
    ``B04``; ``T31UDQ_20230601T105441_TCI_10m.jp2`` -> None.
    """
    for part in reversed(_name_parts(file_name)):
        found = band_id(part)
        if found is not None:
            return found
    return None


def resolution_in_name(file_name: str) -> int | None:
    """The pixel size in metres a file's name carries (``..._B04_10m.jp2`` -> 10), or None."""
    for part in reversed(_name_parts(file_name)):
        found = _RESOLUTION.match(part)
        if found is not None:
            return int(found[1])
    return None


def parse_bands(text: str | Sequence[int | str], option: str = "bands") -> BandList:
    """Bands from ``"4,3,2"`` (1-based numbers), ``"B04,B03,B02"`` or ``"red,green,blue"``.

    Numbers pick bands of a file's (or a stack's) band list. Names pick band files by the
    band their file name carries (:func:`band_in_name`), or a STAC item's assets, in the order
    given; they are returned as band ids (``B4`` and ``red`` as ``B04``).

    Raises:
        ConfigError: If the text is neither numbers of at least 1 nor band names.
    """
    parts = [str(p).strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    ids = [band_id(p) for p in parts]
    if parts and all(ids):
        return tuple(i for i in ids if i is not None)
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise ConfigError(
            f"{option} takes 1-based band numbers such as 4,3,2 or band names such as "
            f"B04,B03,B02 or red,green,blue; got {text!r}"
        )
    return numbers
