"""Both dates of a pair read together: the one road of pixels from files to [0, 1] values.

Training crops, validation and evaluation images, ``dsifn stats`` and every tile of a scene
are read here, by :meth:`ImagePair.read`, into one record (:class:`PairData`): the scaled
values of both dates, their common validity and the scaling used. One rule, written once: a
pixel where either date has no data is no data for both, zeroed in both dates; it is left out
of the loss, the metrics and the percentile stretch's sample.

How a pair is read (:class:`PixelReading`: bands, nodata, resampling, the unit the model
learnt from, scaling rule) comes from a model's input contract or a dataset's configuration.
Each date's digital numbers become reflectance first where the model learnt from reflectance,
with what that date's files state (:mod:`dsifn.io.radiometry`), so a 2017 and a 2023 image
of the same ground give the same values. The scaling of a pair is resolved once,
when it is opened: a fixed rule needs nothing, a percentile stretch samples both dates' pixels
valid in both, from reads decimated to at most :data:`STRETCH_SAMPLE_SIDE` pixels a side, so
that a training crop, a whole evaluated image and a scene of that image are scaled alike.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from dsifn.bands import BandList
from dsifn.errors import ConfigError, DataError, InputError
from dsifn.io.image_source import ImageData, ImageSource, PixelGrid
from dsifn.io.images import SourceName, is_plain, open_image, source_names
from dsifn.io.radiometry import Conversion, ConvertedSource, Unit, convert_date
from dsifn.scaling import Scaling, ScalingRule

__all__ = [
    "STRETCH_SAMPLE_SIDE",
    "DateOffsets",
    "ImagePair",
    "PairData",
    "PixelReading",
    "check_overlap",
    "check_resampling",
    "check_same_grid",
    "combine",
    "open_pair",
    "stretch_sample",
]

# Longest side of the decimated reads the percentile stretch is sampled from.
STRETCH_SAMPLE_SIDE = 1024

Files = str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
# An offset for both dates, or one per date (T1, T2), None meaning the files' own.
DateOffsets = float | tuple[float | None, float | None] | None


def check_resampling(name: str, value: str) -> str:
    """A rasterio resampling name, or a one-line error naming ``name`` and the choices.

    Raises:
        ConfigError: If ``value`` is not one.
    """
    from rasterio.enums import Resampling

    if value not in Resampling.__members__:
        choices = ", ".join(sorted(Resampling.__members__))
        raise ConfigError(f"{name} must be one of {choices}; got {value!r}")
    return value


@dataclass(frozen=True)
class PixelReading:
    """How a file's pixels become [0, 1] values: what a contract or a data config says."""

    bands: BandList | None = None  # 1-based numbers, or names picking band files; None: all
    nodata: float | None = None  # raw value meaning no data, besides the files' own marks
    resampling: str = "bilinear"  # how band files off the finest grid are put on it
    scaling: ScalingRule = field(default_factory=ScalingRule)  # values to [0, 1]
    # What the model learnt from: digital numbers as stored, or reflectance (converted first).
    radiometry: Unit = "dn"
    # Digital numbers added first, replacing stated offsets: one value for both dates, or
    # (T1, T2) with None for "as the files state"; None: as the files state.
    offset: DateOffsets = None
    known: Conversion | None = None  # what the dataset knows of its digital numbers (OSCD)


class PairData(NamedTuple):
    """A window of both dates, scaled, with where both have data."""

    values: np.ndarray  # float32 (2, C, h, w) in [0, 1]; T1 then T2; 0 where not valid
    valid: np.ndarray  # bool (h, w): True where both dates have data
    scaling: Scaling  # the per-band map that was applied


class ImagePair:
    """Both dates of a pair, open on one grid, with the pair's scaling resolved.

    Use it as a context manager (or :meth:`close` it). Build it with :func:`open_pair`.

    Args:
        t1: First date.
        t2: Second date, on ``t1``'s grid with as many bands.
        scaling: The pair's scaling.
        plain: Whether the dates are plain images (PNG/JPEG/BMP: no georeference, a PNG map).
        notices: What opening it found worth a line: T2 resampled onto T1's grid, offsets
            (:func:`dsifn.io.radiometry.convert_date`).
        radiometry: How each date's digital numbers became values, in words.
    """

    def __init__(
        self,
        t1: ImageSource,
        t2: ImageSource,
        scaling: Scaling,
        *,
        plain: bool = False,
        notices: Sequence[str] = (),
        radiometry: str = "digital numbers as stored",
    ) -> None:
        self.t1, self.t2 = t1, t2
        self.scaling = scaling
        self.grid: PixelGrid = t1.grid
        self.count: int = t1.count  # bands per date
        self.plain = plain
        self.notices: tuple[str, ...] = tuple(notices)
        self.radiometry = radiometry  # how digital numbers became values, for the metadata

    def read(
        self, row: int = 0, col: int = 0, height: int | None = None, width: int | None = None
    ) -> PairData:
        """A window of both dates (the whole pair by default), clipped to the grid."""
        height = self.grid.height - row if height is None else height
        width = self.grid.width - col if width is None else width
        height = max(0, min(height, self.grid.height - row))
        width = max(0, min(width, self.grid.width - col))
        first = self.t1.read(row, col, height, width)
        return combine(first, self.t2.read(row, col, height, width), self.scaling)

    def read_decimated(self, max_side: int) -> tuple[ImageData, ImageData]:
        """Both dates shrunk to at most ``max_side`` a side, raw (for pictures and samples)."""
        return self.t1.read_decimated(max_side), self.t2.read_decimated(max_side)

    def reopen(self) -> ImagePair:
        """The same pair through new file handles, for another thread (close it when done)."""
        return ImagePair(
            self.t1.reopen(),
            self.t2.reopen(),
            self.scaling,
            plain=self.plain,
            notices=self.notices,
            radiometry=self.radiometry,
        )

    def close(self) -> None:
        """Release both dates' files."""
        try:
            self.t1.close()
        finally:
            self.t2.close()

    def __enter__(self) -> ImagePair:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def combine(first: ImageData, second: ImageData, scaling: Scaling) -> PairData:
    """The one rule: scale both dates, then zero both wherever either has no data."""
    valid = first.valid & second.valid
    values = np.stack([scaling(first.values), scaling(second.values)])
    values[:, :, ~valid] = 0.0
    return PairData(values, valid, scaling)


def stretch_sample(first: ImageSource, second: ImageSource) -> list[np.ndarray]:
    """Raw values of the pixels the percentile stretch is computed from: one (C, N) per date.

    Both dates are decimated to at most :data:`STRETCH_SAMPLE_SIDE` a side; a pixel counts
    where both dates have data.
    """
    a = first.read_decimated(STRETCH_SAMPLE_SIDE)
    b = second.read_decimated(STRETCH_SAMPLE_SIDE)
    valid = a.valid & b.valid
    return [a.values[:, valid], b.values[:, valid]]


def open_pair(
    before: Files,
    after: Files,
    reading: PixelReading | None = None,
    *,
    align: bool = False,
    scaling: Scaling | None = None,
) -> ImagePair:
    """Open both dates on one grid, convert their digital numbers, resolve the pair's scaling.

    Args:
        before: T1: a raster, a PNG/JPEG/BMP, several band files stacked in order, or GDAL
            dataset names and URLs; with band names, folders, SAFE products and STAC items.
        after: T2, the same way.
        reading: Bands, nodata, resampling, unit and scaling rule; None: the defaults.
        align: Resample T2 onto T1's grid where they differ instead of refusing (said in
            :attr:`ImagePair.notices`); dates that do not overlap are refused all the same.
        scaling: The pair's scaling when already known (a dataset's cache); None: resolved
            from ``reading.scaling`` now.

    Returns:
        The open pair (close it, or use it as a context manager).

    Raises:
        InputError: If a file is missing or the dates mix plain images and rasters.
        DataError: If a file cannot be read, the dates do not overlap, or their grids or band
            counts differ (and ``align`` is false).
    """
    reading = reading or PixelReading()
    p1, p2 = source_names(before), source_names(after)
    if is_plain(p1) != is_plain(p2):
        raise InputError("give both dates as plain images (PNG/JPEG/BMP) or both as rasters")
    if align and is_plain(p1):
        raise ConfigError("align needs georeferenced rasters, not plain images")
    options = {"bands": reading.bands, "nodata": reading.nodata, "resampling": reading.resampling}
    notices: list[str] = []
    t1 = open_image(p1, name="T1", **options)  # type: ignore[arg-type]
    try:
        t2 = _second_date(t1, p2, options, align, notices)
        try:
            raw = np.result_type(t1.dtype, t2.dtype)
            offsets = _per_date(reading.offset)
            d1, d2 = (
                _converted(date, reading, offset, notices)
                for date, offset in zip((t1, t2), offsets, strict=True)
            )
            if scaling is None:
                dtype = raw if reading.radiometry == "dn" else np.result_type(d1.dtype, d2.dtype)
                scaling = reading.scaling.resolve(dtype, t1.count, lambda: stretch_sample(d1, d2))
        except BaseException:
            t2.close()
            raise
    except BaseException:
        t1.close()
        raise
    how = _radiometry(reading.radiometry, (d1, d2))
    return ImagePair(d1, d2, scaling, plain=is_plain(p1), notices=notices, radiometry=how)


def _second_date(
    first: ImageSource,
    files: Sequence[SourceName],
    options: dict[str, Any],
    align: bool,
    notices: list[str],
) -> ImageSource:
    """T2 on T1's grid: as it is when it lies there, resampled onto it when ``align`` allows.

    Raises:
        DataError: If the grids differ (and ``align`` is false) or the dates do not overlap.
    """
    second = open_image(files, name="T2", **options)
    try:
        check_same_grid(first, second)
        return second
    except BaseException as exc:
        second.close()
        if not (align and isinstance(exc, DataError)):
            raise
    native = second.grid
    check_overlap(first.grid, native)
    second = open_image(files, name="T2", grid=first.grid, **options)
    try:
        check_same_grid(first, second)  # the band counts
    except BaseException:
        second.close()
        raise
    notices.append(
        f"T2 ({_grid(native)}) is resampled ({options['resampling']}) onto T1's grid "
        f"({_grid(first.grid)})"
    )
    return second


def _per_date(offset: DateOffsets) -> tuple[float | None, float | None]:
    """(T1's, T2's) offset from one for both dates or a pair."""
    if offset is None or isinstance(offset, (int, float)):
        return offset, offset
    first, second = offset
    return first, second


def _converted(
    date: ImageSource, reading: PixelReading, offset: float | None, notices: list[str]
) -> ImageSource:
    """A date in the unit the reading asks for (:func:`~dsifn.io.radiometry.convert_date`)."""
    converted, said = convert_date(date, reading.radiometry, offset=offset, known=reading.known)
    notices.extend(said)
    return converted


def _radiometry(unit: Unit, dates: Sequence[ImageSource]) -> str:
    """How the dates' digital numbers became values, in words (for the map's metadata)."""
    described = [d.describe() for d in dates if isinstance(d, ConvertedSource)]
    if not described:
        return "digital numbers as stored"
    word = "reflectance" if unit == "reflectance" else "digital numbers"
    return f"{word}: " + "; ".join(described)


def check_overlap(first: PixelGrid, second: PixelGrid) -> None:
    """Refuse a second date that covers none of the first date's ground.

    Raises:
        DataError: If their bounds, in the first date's CRS, do not intersect.
    """
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds

    if first.crs is None or second.crs is None:
        return  # nothing to compare them by; resampling refuses it
    a = array_bounds(first.height, first.width, first.transform)
    b = transform_bounds(
        second.crs, first.crs, *array_bounds(second.height, second.width, second.transform)
    )
    # Bounds are (west, south, east, north).
    if min(a[2], b[2]) <= max(a[0], b[0]) or min(a[3], b[3]) <= max(a[1], b[1]):
        shown = ", ".join(f"{v:g}" for v in b)
        raise DataError(
            f"T2 (bounds {shown}) does not overlap T1 (bounds {', '.join(f'{v:g}' for v in a)}) "
            f"in {first.crs}: they are not the same place"
        )


def _grid(grid: PixelGrid) -> str:
    """``693x538 px of 0.000116 x 0.000116``."""
    x, y = grid.resolution
    return f"{grid.width}x{grid.height} px of {x:.6g} x {y:.6g}"


def check_same_grid(first: ImageSource, second: ImageSource) -> None:
    """Refuse a second date whose CRS, resolution, extent or band count differ from the first.

    Raises:
        DataError: Naming what differs and suggesting `` `align=True` ``.
    """
    a, b = first.grid, second.grid
    if a.crs is None and b.crs is None:  # plain images: nothing to align them by
        if (a.width, a.height, first.count) != (b.width, b.height, second.count):
            raise DataError(f"the dates differ: {_shape(first)}, {_shape(second)}")
        return
    hint = f"; pass `align=True` to resample {second.name} onto {first.name}'s grid"
    if a.crs != b.crs:
        raise DataError(f"{second.name} CRS {b.crs} differs from {first.name} CRS {a.crs}{hint}")
    ra, rb = a.resolution, b.resolution
    if not np.allclose(ra, rb, rtol=1e-6, atol=0):
        raise DataError(
            f"{second.name} resolution {rb[0]:g}x{rb[1]:g} differs from {first.name} "
            f"resolution {ra[0]:g}x{ra[1]:g}{hint}"
        )
    same_origin = b.transform.almost_equals(a.transform, precision=a.tolerance)
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


def _shape(source: ImageSource) -> str:
    """``3 band(s) 32x30 in a/t2.png``: a date's shape and where it was read."""
    files = " ".join(str(p) for p in getattr(source, "paths", ()))
    where = f" in {files}" if files else f" in {source.name}"
    return f"{source.count} band(s) {source.grid.width}x{source.grid.height}{where}"
