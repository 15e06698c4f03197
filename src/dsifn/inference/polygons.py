"""Changed regions as polygons, vectorised strip by strip from a finished probability raster.

The binary mask (probability > threshold on valid pixels: :func:`dsifn.contract.is_change`)
is vectorised in strips of rows with :func:`rasterio.features.shapes` (4-connectivity), in
pixel coordinates. A region that
crosses a strip border comes out as several pieces; pieces of neighbouring strips that share
an edge along the border are dissolved with :func:`shapely.unary_union`, and their pixel counts
and probability sums added, so the result equals vectorising the whole mask at once while only
one strip (plus the regions still open at its bottom edge) is in memory. Finished polygons are
then mapped to the scene's CRS by its affine transform.

Areas are in the CRS's units squared (square metres for a UTM zone; square degrees for a
geographic CRS such as EPSG:4326, where they are not meaningful areas: reproject first).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dsifn.contract import is_change
from dsifn.errors import ConfigError
from dsifn.io.atomic import atomic_path

__all__ = [
    "ChangePolygon",
    "check_polygon_output",
    "iter_regions",
    "merge_strips",
    "require_vector_extra",
    "vectorize",
    "write_polygons",
]

# Rows vectorised at a time.
STRIP_ROWS = 512
# Polygons written to the file at a time.
WRITE_BATCH = 10000
DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON"}


def check_polygon_output(path: str | os.PathLike[str]) -> str:
    """Check, before any work, that polygons can be written to ``path``.

    Returns:
        The OGR driver for the file's extension.

    Raises:
        ConfigError: If the extension is not .gpkg/.geojson or the vector extra is missing.
    """
    driver = DRIVERS.get(Path(path).suffix.lower())
    if driver is None:
        raise ConfigError(f"polygons are written as .gpkg or .geojson; got {Path(path).name}")
    require_vector_extra()
    return driver


def require_vector_extra() -> None:
    """Raise a :class:`ConfigError` naming the extra if pyogrio or shapely is missing."""
    try:
        import pyogrio  # noqa: F401
        import shapely  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"polygon output needs the vector extra (pip install dsifn[vector]): {exc}"
        ) from exc


@dataclass
class ChangePolygon:
    """One changed region."""

    geometry: Any  # shapely Polygon; pixel coordinates until mapped to the CRS
    pixels: int  # pixels inside
    probability_sum: float  # sum of their change probabilities

    @property
    def mean_probability(self) -> float:
        """Mean change probability of the region's pixels."""
        return self.probability_sum / max(self.pixels, 1)


def _strip_pieces(probability: np.ndarray, first_row: int, threshold: float) -> list[ChangePolygon]:
    """Polygons of one strip, in scene pixel coordinates (x = column, y = row)."""
    from affine import Affine
    from rasterio import features
    from shapely.geometry import shape

    valid = ~np.isnan(probability)
    changed = (valid & is_change(probability, threshold)).astype(np.uint8)
    if not changed.any():
        return []
    to_scene = Affine.translation(0, first_row)
    found = [g for g, _ in features.shapes(changed, mask=changed.astype(bool), transform=to_scene)]
    # Label each polygon's pixels to add up probabilities; polygons follow pixel edges, so
    # rasterising them by pixel centres gives exactly their pixels.
    labels = features.rasterize(
        ((g, i + 1) for i, g in enumerate(found)),
        out_shape=changed.shape,
        transform=to_scene,
        fill=0,
        dtype="int32",
    ).ravel()
    counts = np.bincount(labels, minlength=len(found) + 1)
    sums = np.bincount(labels, weights=np.nan_to_num(probability).ravel(), minlength=len(found) + 1)
    return [
        ChangePolygon(shape(g), int(counts[i + 1]), float(sums[i + 1])) for i, g in enumerate(found)
    ]


def _find(parent: list[int], i: int) -> int:
    # Union-find root with path halving.
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _shares_edge(a: Any, b: Any) -> bool:
    return bool(a.intersection(b).length > 0)


def merge_strips(strips: Iterable[tuple[int, int, list[ChangePolygon]]]) -> Iterator[ChangePolygon]:
    """Dissolve pieces of regions cut by strip borders.

    Args:
        strips: (first row, end row, pieces) per strip, top to bottom, covering the scene.

    Yields:
        Whole regions, in pixel coordinates.
    """
    from shapely import STRtree, unary_union

    open_pieces: list[ChangePolygon] = []  # touch the previous strip's bottom edge
    for first, end, pieces in strips:
        top = [p for p in pieces if p.geometry.bounds[1] == first] if open_pieces else []
        rest = [p for p in pieces if not (open_pieces and p.geometry.bounds[1] == first)]
        # Union-find over open pieces (0..k-1) and top pieces (k..).
        nodes = open_pieces + top
        parent = list(range(len(nodes)))
        if top:
            tree = STRtree([p.geometry for p in open_pieces])
            for j, piece in enumerate(top, start=len(open_pieces)):
                for i in tree.query(piece.geometry):
                    if _shares_edge(open_pieces[int(i)].geometry, piece.geometry):
                        parent[_find(parent, j)] = _find(parent, int(i))
        groups: dict[int, list[ChangePolygon]] = {}
        for i in range(len(nodes)):
            groups.setdefault(_find(parent, i), []).append(nodes[i])
        merged = [
            group[0]
            if len(group) == 1
            else ChangePolygon(
                unary_union([p.geometry for p in group]),
                sum(p.pixels for p in group),
                sum(p.probability_sum for p in group),
            )
            for group in groups.values()
        ]
        open_pieces = []
        for piece in merged + rest:
            if piece.geometry.bounds[3] == end:
                open_pieces.append(piece)
            else:
                yield piece
    yield from open_pieces


def iter_regions(
    work: str | os.PathLike[str], *, threshold: float, strip_rows: int = STRIP_ROWS
) -> Iterator[ChangePolygon]:
    """Changed regions of a probability raster (float32, NaN = nodata), in its CRS.

    A generator: regions come out as soon as they are complete, so a scene with millions of
    specks never holds them all.

    Args:
        work: The probability raster.
        threshold: Pixels with probability > threshold are changed.
        strip_rows: Rows vectorised at a time.

    Yields:
        The regions, geometry in the raster's CRS coordinates.
    """
    import rasterio
    from shapely import affinity

    with rasterio.open(work) as src:
        t = src.transform
        matrix = [t.a, t.b, t.d, t.e, t.c, t.f]

        def strips() -> Iterator[tuple[int, int, list[ChangePolygon]]]:
            for first in range(0, src.height, strip_rows):
                end = min(first + strip_rows, src.height)
                rows = src.read(1, window=((first, end), (0, src.width)))
                yield first, end, _strip_pieces(rows, first, threshold)

        for region in merge_strips(strips()):
            region.geometry = affinity.affine_transform(region.geometry, matrix)
            yield region


def vectorize(
    work: str | os.PathLike[str], *, threshold: float, strip_rows: int = STRIP_ROWS
) -> tuple[list[ChangePolygon], Any]:
    """All changed regions of a probability raster and its CRS (see :func:`iter_regions`)."""
    import rasterio

    with rasterio.open(work) as src:
        crs = src.crs
    return list(iter_regions(work, threshold=threshold, strip_rows=strip_rows)), crs


def write_polygons(
    work: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    threshold: float,
    min_area: float = 0.0,
    overwrite: bool = False,
) -> int:
    """Write changed regions of a probability raster to a GeoPackage or GeoJSON file.

    Fields: ``area`` (CRS units squared), ``mean_probability``, ``pixels``.

    Args:
        work: The probability raster (float32, NaN = nodata).
        path: ``.gpkg`` or ``.geojson`` output.
        threshold: Change threshold.
        min_area: Drop regions smaller than this (CRS units squared).
        overwrite: Replace an existing file.

    Returns:
        The number of polygons written.
    """
    driver = check_polygon_output(path)
    import rasterio

    out = Path(path)
    with rasterio.open(work) as src:
        crs = None if src.crs is None else src.crs.to_wkt()
    found = iter_regions(work, threshold=threshold)
    regions = (region for region in found if region.geometry.area >= min_area)
    with atomic_path(out, overwrite=overwrite) as partial:
        # GDAL picks format details from the extension: write under the real name first.
        with tempfile.TemporaryDirectory(dir=partial.parent, prefix=".dsifn-") as tmp:
            staged = Path(tmp) / out.name
            written = _write_batches(regions, staged, driver, crs)
            os.replace(staged, partial)
    return written


def _write_batches(regions: Iterable[ChangePolygon], path: Path, driver: str, crs: Any) -> int:
    # Regions appended to the file :data:`WRITE_BATCH` at a time; returns how many.
    written = 0
    batch: list[ChangePolygon] = []
    for region in regions:
        batch.append(region)
        if len(batch) == WRITE_BATCH:
            _write_layer(path, batch, driver, crs, append=written > 0)
            written += len(batch)
            batch = []
    if batch or written == 0:  # the first write also creates an empty layer
        _write_layer(path, batch, driver, crs, append=written > 0)
        written += len(batch)
    return written


def _write_layer(
    path: Path, batch: list[ChangePolygon], driver: str, crs: Any, *, append: bool
) -> None:
    # One batch of regions into the layer "changes", with their area, mean and pixel count.
    import pyogrio.raw
    import shapely

    pyogrio.raw.write(
        path,
        np.array([shapely.to_wkb(r.geometry) for r in batch], dtype=object),
        [
            np.array([r.geometry.area for r in batch], dtype=np.float64),
            np.array([r.mean_probability for r in batch], dtype=np.float64),
            np.array([r.pixels for r in batch], dtype=np.int64),
        ],
        ["area", "mean_probability", "pixels"],
        layer="changes",
        driver=driver,
        geometry_type="Polygon",
        crs=crs,
        append=append,
    )
