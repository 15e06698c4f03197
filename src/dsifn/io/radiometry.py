"""Digital numbers to reflectance: what a product states, and the conversion a date is read with.

Sentinel-2 L1C and L2A store reflectance as integers: ``reflectance = (DN + offset) /
10000``. Before processing baseline 04.00 (products of 25 January 2022 on, and every product of
the reprocessed collection) the offset was 0; since then it is -1000 (``RADIO_ADD_OFFSET`` in
L1C, ``BOA_ADD_OFFSET`` in L2A). A model that learnt from DN / 10000 of 2017 images and reads a
2023 image the same way sees every reflectance 0.1 too high. So pixels take the road

    raw DN -> reflectance (when the model learnt from reflectance) -> scaling -> normalisation

and the conversion of each band (:class:`Conversion`) is, first to last:

1. an offset asked for (``offset``, in digital numbers: -1000), with the scale found below;
2. what the file states: GeoTIFF/COG scale and offset tags (GDAL's ``physical = DN * scale +
   offset``), a STAC item's ``raster:bands``, a SAFE product's metadata XML
   (``QUANTIFICATION_VALUE``, ``RADIO_ADD_OFFSET`` / ``BOA_ADD_OFFSET``);
3. what the dataset layout knows (OSCD: L1C of 2015-2018, DN / 10000);
4. Sentinel-2's rule without an offset, DN / 10000 (floating-point values are taken as
   reflectance already), with a one-line warning where the file's name says it is a product
   of baseline 04.00 or later (:func:`product_hint`).

A model whose input contract records digital numbers (``"dn"``, every model trained before
this existed) reads them as they are; an asked offset is added to them, and an offset a file
states is named in a notice, not applied.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np

from dsifn.bands import SENTINEL2_BANDS, band_in_name
from dsifn.errors import ConfigError, DataError
from dsifn.io.image_source import ImageData, ImageSource

__all__ = [
    "BASELINE_04_DATE",
    "REFLECTANCE_SCALE_LIMIT",
    "S2_QUANTIFICATION",
    "UNITS",
    "Conversion",
    "ConvertedSource",
    "Unit",
    "band_conversion",
    "check_reflectance_scale",
    "convert_date",
    "describe_conversions",
    "from_scale_offset",
    "product_hint",
    "safe_conversion",
]

# What a model learnt from: digital numbers as stored, or reflectance.
Unit = Literal["dn", "reflectance"]
UNITS: tuple[Unit, ...] = ("dn", "reflectance")
# Sentinel-2's digital numbers per unit of reflectance (QUANTIFICATION_VALUE).
S2_QUANTIFICATION = 10000.0
# First products of processing baseline 04.00, whose digital numbers carry an offset of 1000.
BASELINE_04_DATE = date(2022, 1, 25)
# A scale above this, applied to reflectance (0 to about 1), is a scale of digital numbers.
REFLECTANCE_SCALE_LIMIT = 100.0


def check_reflectance_scale(unit: str, scale: float | None, name: str, remedy: str) -> None:
    """Refuse a scale of digital numbers (above :data:`REFLECTANCE_SCALE_LIMIT`) on reflectance.

    On reflectance (0 to about 1) the scale of the values mapped to 1.0 is in reflectance
    units (0.3); 10000 would squeeze every value to nearly 0. One rule for a data configuration
    and an input contract alike.

    Args:
        unit: What the values are: ``"dn"``, ``"reflectance"`` (or ``"auto"``: not decided).
        scale: The scale asked for; None: by dtype.
        name: The option, for the message (``data.scale``).
        remedy: What to do instead, for the message.

    Raises:
        ConfigError: ``"{name}={scale} would divide reflectance (0 to about 1): {remedy}"``.
    """
    if unit == "reflectance" and (scale or 0.0) > REFLECTANCE_SCALE_LIMIT:
        raise ConfigError(f"{name}={scale:g} would divide reflectance (0 to about 1): {remedy}")


@dataclass(frozen=True)
class Conversion:
    """``physical = (DN + dn_offset) * scale``, one band's road from digital numbers."""

    scale: float  # physical units per digital number (1 / 10000 for Sentinel-2)
    dn_offset: float  # added to the digital numbers first (-1000 since baseline 04.00)
    source: str  # where it was found, for messages and the map's metadata

    def describe(self) -> str:
        """``(DN - 1000) x 0.0001 (file tags)``."""
        sign = "-" if self.dn_offset < 0 else "+"
        dn = "DN" if self.dn_offset == 0 else f"(DN {sign} {abs(self.dn_offset):g})"
        return f"{dn} x {self.scale:g} ({self.source})"


def from_scale_offset(scale: float, offset: float, source: str) -> Conversion | None:
    """GDAL's or STAC's ``physical = DN * scale + offset`` as a :class:`Conversion`.

    Returns:
        None where nothing is stated (scale 1 and offset 0, what GDAL reports by default).
    """
    if (scale, offset) == (1.0, 0.0) or scale == 0:
        return None
    dn_offset = offset / scale
    if abs(dn_offset - round(dn_offset)) < 1e-6:  # -0.1 / 0.0001: exactly -1000 DN
        dn_offset = float(round(dn_offset))
    return Conversion(float(scale), dn_offset, source)


def band_conversion(
    stated: Conversion | None,
    *,
    known: Conversion | None,
    offset: float | None,
    floating: bool,
) -> Conversion:
    """The conversion to reflectance of one band (rules 1-4 of the module docstring).

    Args:
        stated: What the file (its tags, STAC item or SAFE metadata) states, or None.
        known: What the dataset layout knows, or None.
        offset: Digital numbers asked to be added (``--offset``), replacing any stated.
        floating: Whether the band's values are floating-point (taken as reflectance).
    """
    base = stated or known
    if base is None:
        base = (
            Conversion(1.0, 0.0, "floating-point values taken as reflectance")
            if floating
            else Conversion(1 / S2_QUANTIFICATION, 0.0, "none stated: Sentinel-2's DN / 10000")
        )
    if offset is None:
        return base
    return Conversion(base.scale, float(offset), f"{base.source}; offset {offset:g} as asked")


def describe_conversions(name: str, conversions: Sequence[Conversion]) -> str:
    """``T2 (DN - 1000) x 0.0001 (file tags)``, band by band where they differ."""
    texts = [c.describe() for c in conversions]
    if len(set(texts)) == 1:
        return f"{name} {texts[0]}"
    return f"{name} " + ", ".join(f"band {i + 1} {t}" for i, t in enumerate(texts))


# SAFE metadata: MTD_MSIL1C.xml / MTD_MSIL2A.xml at the root of a product's folder.
_SAFE_XML = ("MTD_MSIL1C.xml", "MTD_MSIL2A.xml")
_QUANTIFICATION_TAGS = ("QUANTIFICATION_VALUE", "BOA_QUANTIFICATION_VALUE")
_OFFSET_TAGS = ("RADIO_ADD_OFFSET", "BOA_ADD_OFFSET")


def _safe_metadata(path: Path) -> Path | None:
    """The metadata XML of the SAFE product a band file lies in (up to five folders up)."""
    for folder in list(path.parents)[:5]:
        for name in _SAFE_XML:
            if (folder / name).is_file():
                return folder / name
    return None


@functools.lru_cache(maxsize=64)
def _read_safe(xml: Path) -> tuple[float, dict[str, float]]:
    """A SAFE product's quantification value and DN offset per band id (absent: none)."""
    try:
        root = ElementTree.parse(xml).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise DataError(f"cannot read the product metadata {xml}: {exc}") from exc
    quantification, offsets = S2_QUANTIFICATION, {}
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        text = (element.text or "").strip()
        if tag in _QUANTIFICATION_TAGS and text:
            quantification = float(text)
        elif tag in _OFFSET_TAGS and text:
            index = int(element.get("band_id", "-1"))
            if 0 <= index < len(SENTINEL2_BANDS):
                offsets[SENTINEL2_BANDS[index]] = float(text)
    return quantification, offsets


def safe_conversion(path: Path) -> Conversion | None:
    """What the SAFE product a band file lies in states about that band, or None.

    A product of baseline 04.00 or later lists an offset per band; an older one lists none,
    which states an offset of 0.
    """
    xml = _safe_metadata(path)
    band = band_in_name(path.name)
    if xml is None or band is None:
        return None
    quantification, offsets = _read_safe(xml)
    return Conversion(1 / quantification, offsets.get(band, 0.0), f"{xml.name}")


# A product's processing baseline in its name (S2B_MSIL2A_20230601T105619_N0509_R094_...).
_BASELINE = re.compile(r"_N(\d{2})(\d{2})(?:_|\.|$)")
# A sensing date in a name (T31UDQ_20230601T105441_B04_10m.jp2, S2B_31UDQ_20230601_0_L2A).
_SENSED = re.compile(r"(?:^|_)(20\d{2})(\d{2})(\d{2})(?:T\d{6})?(?:_|\.|$)")


def product_hint(names: Sequence[str]) -> str | None:
    """Why a date looks like a Sentinel-2 product of baseline 04.00 or later, or None.

    Read from the names of its files (or its STAC item's id and properties): a processing
    baseline (``_N0509_``) of 04.00 or later, else a sensing date on or after
    :data:`BASELINE_04_DATE`.
    """
    for name in names:
        for part in PurePosixPath(name).parts:
            found = _BASELINE.search(part)
            if found is not None and int(found[1]) >= 4:
                return f"processing baseline {found[1]}.{found[2]}"
    for name in names:
        found = _SENSED.search(PurePosixPath(name).name)
        if found is None:
            continue
        try:
            sensed = date(int(found[1]), int(found[2]), int(found[3]))
        except ValueError:
            continue
        if sensed >= BASELINE_04_DATE:
            return f"sensed {sensed.isoformat()}"
    return None


def _alone(name: str) -> str:
    """The ``--offset`` that gives date ``name`` alone an offset of -1000 (the other: its own)."""
    return "--offset ,-1000" if name == "T2" else "--offset=-1000,"


class ConvertedSource(ImageSource):
    """A date whose digital numbers are converted band by band as they are read (float32).

    Args:
        source: The date as stored.
        conversions: One per band of ``source``.
    """

    def __init__(self, source: ImageSource, conversions: Sequence[Conversion]) -> None:
        self.source = source
        self.conversions = tuple(conversions)
        self.grid = source.grid
        self.count = source.count
        self.dtype = "float32"
        self.name = source.name
        self.paths = list(getattr(source, "paths", ()))
        shape = (len(self.conversions), 1, 1)
        self._scale = np.array([c.scale for c in self.conversions], np.float32).reshape(shape)
        self._add = np.array([c.dn_offset for c in self.conversions], np.float32).reshape(shape)

    def _convert(self, data: ImageData) -> ImageData:
        # (DN + offset) * scale in float32: an integer offset keeps DN + offset exact, so the
        # same reflectance stored with and without an offset converts to the same numbers.
        values = np.add(data.values, self._add, dtype=np.float32)
        values *= self._scale
        return ImageData(values, data.valid)

    def read(self, row: int, col: int, height: int, width: int) -> ImageData:
        """Converted values (float32) and validity of a window."""
        return self._convert(self.source.read(row, col, height, width))

    def read_decimated(self, max_side: int) -> ImageData:
        """The whole date shrunk to at most ``max_side`` a side, converted."""
        return self._convert(self.source.read_decimated(max_side))

    def describe(self) -> str:
        """How its values are made: ``T2 (DN - 1000) x 0.0001 (file tags)``."""
        return describe_conversions(self.name, self.conversions)

    def reopen(self) -> ConvertedSource:
        """The same conversion over new file handles."""
        return ConvertedSource(self.source.reopen(), self.conversions)

    def close(self) -> None:
        """Close the date's files."""
        self.source.close()


def convert_date(
    source: ImageSource, unit: Unit, *, offset: float | None, known: Conversion | None
) -> tuple[ImageSource, list[str]]:
    """One date as the model's unit says: converted to reflectance, or digital numbers.

    Args:
        source: The date as stored.
        unit: What the model learnt from (its input contract's ``radiometry``).
        offset: Digital numbers to add first (``--offset``), replacing any stated offset.
        known: What the dataset layout knows of its digital numbers, or None.

    Returns:
        The date to read (``source`` itself for digital numbers read as stored) and the
        notices to say: a product of baseline 04.00 or later of which nothing states an
        offset, and an offset a file states that digital numbers read as stored ignore.
    """
    stated = source.stated_conversions()
    floating = bool(np.issubdtype(np.dtype(source.dtype), np.floating))
    notices = []
    unknown = known is None and offset is None and not any(stated)
    if unknown and not floating and source.hint is not None:
        notices.append(
            f"{source.name} looks like a Sentinel-2 product of processing baseline 04.00 or "
            f"later ({source.hint}), whose digital numbers are reflectance x 10000 + 1000, but "
            "nothing states its offset (no scale/offset tags, STAC raster:bands or SAFE "
            f"metadata): read as offset 0; if it has one, give it: offset -1000 (dsifn predict "
            f"--offset -1000 for both dates, {_alone(source.name)} for {source.name} alone)"
        )
    if unit == "dn":
        shifted = [s for s in stated if s is not None and s.dn_offset != 0]
        if shifted and offset is None:
            notices.append(
                f"{source.name} states an offset of its digital numbers ({shifted[0].source}: "
                f"{shifted[0].dn_offset:g}); the model reads digital numbers as stored (its "
                "input contract records no conversion to reflectance), so it is not applied: "
                f"give offset {shifted[0].dn_offset:g} to apply it (dsifn predict --offset "
                f"{shifted[0].dn_offset:g})"
            )
        if offset is None:
            return source, notices
        asked = Conversion(1.0, offset, "offset as asked")
        return ConvertedSource(source, [asked] * source.count), notices
    conversions = [
        band_conversion(s, known=known, offset=offset, floating=floating) for s in stated
    ]
    return ConvertedSource(source, conversions), notices
