"""Rasters through rasterio: one file, or band files warped on the fly onto one grid."""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsifn.errors import DataError, InputError
from dsifn.io.atomic import check_input_file
from dsifn.io.image_source import (
    ImageData,
    ImageSource,
    PixelGrid,
    decimated_shape,
    select_bands,
    valid_pixels,
)
from dsifn.io.radiometry import Conversion, from_scale_offset

__all__ = ["RasterSource", "SourceName", "is_url", "url_name"]

# A raster to open: a local file, or a name GDAL opens that is not one (``/vsicurl/...``,
# ``GPKG:file.gpkg:table``), kept as text so that no path logic changes it.
SourceName = str | Path

_URL = re.compile(r"^https?://", re.IGNORECASE)
_CURL = "/vsicurl/"


def is_url(text: str) -> bool:
    """Whether ``text`` is an ``http(s)://`` URL."""
    return _URL.match(text) is not None


def url_name(text: str) -> str | None:
    """How GDAL reads an ``http(s)://`` URL: ``/vsicurl/URL``; None where ``text`` is not one.

    GDAL reads it by windows, never downloading it whole.
    """
    return f"{_CURL}{text}" if is_url(text) else None


class RasterSource(ImageSource):
    """One date from one or more raster files, stacked in order and put on one grid.

    Alpha bands are not part of the stack: they say where the other bands are valid.

    Args:
        paths: One multi-band file, or several files whose bands are stacked in the given
            order (local paths, or GDAL dataset names such as ``/vsicurl/https://...``).
        bands: 1-based band numbers to keep from the stack, in the order wanted; None: all.
        nodata: Raw value that marks no data on any band, as well as the files' own marks.
        grid: Target grid; None: the grid of the finest-resolution file (of the only file).
        resampling: Resampling name for files not on the target grid.
        name: What to call this date in messages ("T1", "T2").
        stated: Per file, what is known of its digital numbers from elsewhere (a STAC item, a
            SAFE product's metadata), replacing its own scale and offset tags; None: the tags.
        hint: Why the files' names say they are a product of baseline 04.00 or later.
    """

    def __init__(
        self,
        paths: Sequence[SourceName],
        *,
        bands: Sequence[int] | None = None,
        nodata: float | None = None,
        grid: PixelGrid | None = None,
        resampling: str = "bilinear",
        name: str = "image",
        stated: Sequence[Conversion | None] | None = None,
        hint: str | None = None,
    ) -> None:
        if not paths:
            raise InputError(f"no file given for {name}")
        self._options: dict[str, Any] = {
            "bands": bands,
            "nodata": nodata,
            "resampling": resampling,
            "name": name,
            "stated": stated,
            "hint": hint,
        }
        self.name = name
        self.nodata = nodata
        self.hint = hint
        self.paths = list(paths)
        self._files: list[Any] = []
        self._layers: list[Any] = []
        try:
            self._open(grid, resampling)
            given = list(stated) if stated is not None else [None] * len(self._files)
            stack = [
                (layer, b, given[i] or _tagged(file, b))
                for i, (layer, file) in enumerate(zip(self._layers, self._files, strict=True))
                for b in _data_bands(file)
            ]
            chosen = [stack[i] for i in select_bands(len(stack), bands, name)]
            self._bands = [(layer, b) for layer, b, _ in chosen]
            self._stated = [conversion for _, _, conversion in chosen]
            self.count = len(self._bands)
            self.dtype = str(np.result_type(*[layer.dtypes[b - 1] for layer, b in self._bands]))
        except BaseException:
            self.close()
            raise

    def stated_conversions(self) -> list[Conversion | None]:
        """What the files (or a STAC item, a SAFE product) state about each band's numbers."""
        return list(self._stated)

    def _open(self, grid: PixelGrid | None, resampling: str) -> None:
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

        for path in self.paths:
            if isinstance(path, Path):
                check_input_file(path, f"{self.name} file", InputError)
            try:
                with warnings.catch_warnings(), rasterio.Env(**_remote_options(path)):
                    # Plain TIFF tiles of public datasets carry no georeference; that is fine.
                    warnings.simplefilter("ignore", NotGeoreferencedWarning)
                    self._files.append(rasterio.open(path))
            except RasterioIOError as exc:
                detail = " ".join(str(exc).split())
                raise DataError(
                    f"{self.name} file {path} is not a readable raster: {detail}"
                ) from exc
        if grid is None:
            finest = min(self._files, key=lambda f: abs(f.transform.a * f.transform.e))
            grid = PixelGrid(finest.crs, finest.transform, finest.width, finest.height)
        self.grid = grid
        self._layers = [self._on_grid(f, resampling) for f in self._files]

    def _on_grid(self, file: Any, resampling: str) -> Any:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        grid = self.grid
        if file.crs is None and len(self._files) > 1:
            raise DataError(f"{self.name} file {file.name} has no CRS: cannot stack it")
        on_grid = (
            file.crs == grid.crs
            and file.width == grid.width
            and file.height == grid.height
            and file.transform.almost_equals(grid.transform, precision=grid.tolerance)
        )
        if on_grid:
            return file
        if file.crs is None or grid.crs is None:
            raise DataError(f"{self.name} file {file.name} has no CRS: cannot resample it")
        return WarpedVRT(
            file,
            crs=grid.crs,
            transform=grid.transform,
            width=grid.width,
            height=grid.height,
            resampling=Resampling[resampling],
            # Pixels of the grid the file does not cover get alpha 0, so its masks report
            # them invalid instead of passing zero-filled values as data.
            add_alpha=True,
        )

    def reopen(self) -> RasterSource:
        """The same stack, bands and grid through new file handles (close it when done)."""
        return RasterSource(self.paths, **{**self._options, "grid": self.grid})

    def _groups(self) -> list[tuple[Any, list[int], list[int]]]:
        # Read each file once per window: (layer, its band numbers, positions in the stack).
        groups: dict[int, tuple[Any, list[int], list[int]]] = {}
        for pos, (layer, band) in enumerate(self._bands):
            entry = groups.setdefault(id(layer), (layer, [], []))
            entry[1].append(band)
            entry[2].append(pos)
        return list(groups.values())

    def read(self, row: int, col: int, height: int, width: int) -> ImageData:
        """Values and validity of a window inside the grid, values in :attr:`dtype`."""
        return self._read(height, width, window=(row, col))

    def read_decimated(self, max_side: int) -> ImageData:
        """The whole scene shrunk to at most ``max_side`` a side, by GDAL (float32 values)."""
        h, w = decimated_shape(self.grid, max_side)
        data = self._read(h, w, window=None)
        return ImageData(data.values.astype(np.float32), data.valid)

    def _read(self, height: int, width: int, *, window: tuple[int, int] | None) -> ImageData:
        """Values and validity of a window, or of the whole grid decimated (``window`` None).

        Validity is every mark at once: GDAL's mask of each band read (nodata value, alpha
        band, internal or sidecar mask, a warped file's coverage), the ``nodata`` given, and
        finiteness.
        """
        values = np.empty((self.count, height, width), dtype=self.dtype)
        valid = np.ones((height, width), dtype=bool)
        for layer, bands, positions in self._groups():
            values[positions] = self._layer_read(layer.read, bands, height, width, window)
            masks = self._layer_read(layer.read_masks, bands, height, width, window)
            valid &= np.all(masks > 0, axis=0)
        valid &= valid_pixels(values, self.nodata)
        return ImageData(values, valid)

    def _layer_read(
        self,
        read: Any,
        bands: list[int],
        height: int,
        width: int,
        window: tuple[int, int] | None,
    ) -> np.ndarray:
        """One read (``layer.read`` or ``layer.read_masks``) of a window, or of the whole grid.

        With ``window`` None the whole grid is read decimated to (height, width). A failed
        read means a corrupt or truncated file.
        """
        from rasterio.errors import RasterioError
        from rasterio.windows import Window

        try:
            if window is None:
                return np.asarray(read(bands, out_shape=(len(bands), height, width)))
            return np.asarray(read(bands, window=Window(window[1], window[0], width, height)))
        except RasterioError as exc:
            files = " ".join(str(p) for p in self.paths)
            detail = " ".join(str(exc).split())
            raise DataError(f"{self.name} file {files} is corrupt or truncated: {detail}") from exc

    def close(self) -> None:
        """Close the files and any warped views of them."""
        for layer in self._layers:
            if layer not in self._files:
                layer.close()
        for f in self._files:
            f.close()
        self._files = []
        self._layers = []


def _tagged(file: Any, band: int) -> Conversion | None:
    """The scale and offset tags of a file's band (GDAL's metadata), None where it has none."""
    scale, offset = file.scales[band - 1], file.offsets[band - 1]
    return from_scale_offset(float(scale), float(offset), "file tags")


def _remote_options(path: SourceName) -> dict[str, str]:
    """GDAL settings for opening a file over HTTP: no listing of its folder (a COG is one file).

    A value the user set in the environment wins.
    """
    remote = isinstance(path, str) and path.startswith(_CURL)
    if not remote or "GDAL_DISABLE_READDIR_ON_OPEN" in os.environ:
        return {}
    return {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def _data_bands(file: Any) -> list[int]:
    """The 1-based bands of a file that hold data: all but an alpha band."""
    from rasterio.enums import ColorInterp

    interpretation = file.colorinterp
    return [b for b in range(1, file.count + 1) if interpretation[b - 1] != ColorInterp.alpha]
