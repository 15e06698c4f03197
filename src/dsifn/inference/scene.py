"""Change maps for whole scenes: tiled, blended, windowed, georeferenced.

:func:`predict_scene` runs in three passes, none of which holds the scene in memory:

1. Inference: overlapping tiles, a batch at a time, blended strip by strip
   (:class:`~dsifn.inference.tiling.StripBlender`); finished rows go to a float32 working
   raster (NaN where either date is invalid) in a temporary folder beside the output.
2. The output (GeoTIFF, Cloud-Optimized GeoTIFF or PNG) is written from the working raster in
   row blocks, to a temporary file renamed into place when complete.
3. Optional polygons (:mod:`dsifn.inference.polygons`) and quicklook
   (:mod:`dsifn.inference.quicklook`) are made from the working raster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from dsifn._validation import check_choice
from dsifn._version import __version__
from dsifn.contract import InputContract, check_threshold, is_change
from dsifn.errors import ConfigError, InputError
from dsifn.inference.pipeline import normalizer, plan_tiles, run_tiles
from dsifn.inference.runner import TileRunner, load_runner
from dsifn.inference.scene_attention import (
    DEFAULT_WINDOW,
    AttentionRunner,
    WindowGrid,
    run_scene_attention,
)
from dsifn.inference.sources import SceneSource, check_same_grid
from dsifn.inference.tiling import TileGrid
from dsifn.io.atomic import check_output_path, move_into_place
from dsifn.io.images import PILLOW_SUFFIXES, ArraySource, open_image
from dsifn.scaling import Scaling, ScalingRule

__all__ = [
    "FLOAT_NODATA",
    "UINT8_NODATA",
    "AttentionMode",
    "OutputDtype",
    "OutputMode",
    "SceneOptions",
    "SceneResult",
    "predict_scene",
]

OutputMode = Literal["probability", "mask", "both"]
AttentionMode = Literal["tile", "scene"]
OutputDtype = Literal["float32", "uint8"]
PathLike = str | os.PathLike[str]

# Nodata of float32 outputs: outside [0, 1], so no probability is mistaken for it.
FLOAT_NODATA = -1.0
# Nodata of uint8 outputs; probabilities are stored as round(p * 254) to keep 255 free.
UINT8_NODATA = 255
UINT8_PROBABILITY_SCALE = 254
# Rows written per block of the output pass: a multiple of the output's 256-pixel blocks.
OUTPUT_ROWS = 256
# GDAL block cache during scene inference, in MiB.
GDAL_CACHE_MB = 128
# Longest side of the decimated read used for the percentile stretch.
STRETCH_SAMPLE_SIDE = 1024


@dataclass(frozen=True)
class SceneOptions:
    """How :func:`predict_scene` tiles, scales and writes. Defaults suit a CPU."""

    # None: the model's fixed size, else the tile size it trained on, else 512 (scene
    # attention: 1024).
    tile_size: int | None = None
    overlap: int | None = None  # pixels shared by neighbouring tiles; None: tile_size // 8
    batch_size: int = 1  # tiles per forward pass (1 keeps DSIFN on a CPU under 2 GiB)
    tta: bool = False  # average the 8 flips/rotations of each tile
    # Channel attention's descriptors: pooled over each tile ("tile", fast), or over the whole
    # scene ("scene": equals the network run on the whole scene; one more pass per attention
    # stage, windows with 288-pixel margins; see dsifn.inference.scene_attention).
    attention: AttentionMode = "tile"
    mode: OutputMode = "probability"  # bands written: probability, binary mask, or both
    dtype: OutputDtype = "float32"  # probability as float32, or uint8 round(p * 254)
    threshold: float | None = None  # decision threshold; None: the model's recorded one
    cog: bool = False  # write a Cloud-Optimized GeoTIFF (with overviews)
    # How pixels become input; None: as the model's input contract records (dsifn.contract).
    bands: tuple[int, ...] | tuple[str, ...] | None = None  # numbers, or names (B04...)
    scale: float | None = None  # fixed divisor of raw values (10000 for Sentinel-2 L1C)
    stretch: tuple[float, float] | None = None  # per-band percentile stretch from both dates
    align: bool = False  # resample T2 onto T1's grid instead of refusing a mismatch
    polygons: PathLike | None = None  # also write changed regions (.gpkg or .geojson)
    min_area: float = 0.0  # drop polygons smaller than this (CRS units squared)
    quicklook: PathLike | None = None  # also write a before | after | change PNG
    overwrite: bool = False  # replace existing outputs
    progress: bool = True  # show a progress bar over tiles
    runtime: str = "auto"  # for a model given as a path: "auto" (by file), "torch", "onnxruntime"
    device: str = "auto"  # for a model given as a path
    precision: str = "auto"  # for a model given as a path (torch runtime)

    def __post_init__(self) -> None:
        """Check values users can get wrong."""
        check_choice("mode", self.mode, get_args(OutputMode))
        check_choice("dtype", self.dtype, get_args(OutputDtype))
        check_choice("attention", self.attention, get_args(AttentionMode))
        if self.attention == "scene" and self.overlap is not None:
            raise ConfigError(
                "with scene-wide attention the overlap follows from the model's receptive "
                "field; leave --overlap out"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1; got {self.batch_size}")
        if self.threshold is not None:
            check_threshold(self.threshold)
        ScalingRule.of(self.scale, self.stretch)  # refuses values that make no sense
        if self.min_area < 0:
            raise ConfigError(f"min area must not be negative; got {self.min_area}")
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"overlap must not be negative; got {self.overlap}")


@dataclass(frozen=True)
class SceneResult:
    """What :func:`predict_scene` wrote."""

    output: Path  # the change map
    polygons: Path | None  # the polygon file, if asked for
    quicklook: Path | None  # the quicklook PNG, if asked for
    polygon_count: int | None  # polygons written
    tiles: int  # tiles predicted (before test-time augmentation)
    threshold: float  # decision threshold used
    tags: dict[str, str]  # metadata recorded in the output


def _as_paths(value: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value]


def _is_plain(paths: Sequence[Path]) -> bool:
    return len(paths) == 1 and paths[0].suffix.lower() in PILLOW_SUFFIXES


def open_pair(
    before: PathLike | Sequence[PathLike],
    after: PathLike | Sequence[PathLike],
    *,
    bands: Sequence[int] | Sequence[str] | None = None,
    nodata: float | None = None,
    align: bool = False,
    resampling: str = "bilinear",
) -> tuple[SceneSource, SceneSource]:
    """Open both dates on one grid, refusing mismatches unless ``align``.

    Args:
        before: T1: a raster, a PNG/JPEG/BMP, or several band files stacked in order.
        after: T2, the same way.
        bands: 1-based bands to keep from each stack.
        nodata: Raw value that marks no data, instead of the files' own marks.
        align: Resample T2 onto T1's grid (bilinear) instead of refusing a mismatch.
        resampling: How band files of coarser resolution are put on the finest grid.

    Returns:
        The T1 and T2 sources (close them, or use them as context managers).
    """
    p1, p2 = _as_paths(before), _as_paths(after)
    for name, paths in (("T1", p1), ("T2", p2)):
        for path in paths:
            if path.is_dir():
                raise InputError(f"{name} file {path} is a folder, not an image file")
    if _is_plain(p1) != _is_plain(p2):
        raise InputError("give both dates as plain images (PNG/JPEG/BMP) or both as rasters")
    if align and _is_plain(p1):
        raise ConfigError("align needs georeferenced rasters, not plain images")
    t1 = open_image(p1, bands=bands, nodata=nodata, resampling=resampling, name="T1")
    try:
        grid = t1.grid if align else None
        t2 = open_image(p2, bands=bands, nodata=nodata, grid=grid, resampling=resampling, name="T2")
        try:
            check_same_grid(t1, t2)
        except BaseException:
            t2.close()
            raise
    except BaseException:
        t1.close()
        raise
    return t1, t2


def scene_scaling(t1: SceneSource, t2: SceneSource, rule: ScalingRule) -> Scaling:
    """The scaling of a scene pair: ``rule`` applied to its type (a stretch to both dates)."""

    def samples() -> list[np.ndarray]:
        found = []
        for source in (t1, t2):
            values, valid = source.read_decimated(STRETCH_SAMPLE_SIDE)
            found.append(values[:, valid])
        return found

    return rule.resolve(np.result_type(t1.dtype, t2.dtype), t1.count, samples)


def _work_profile(grid: Any) -> dict[str, Any]:
    # One row per strip: rows arrive in order, so each strip is written once, whole.
    return {
        "driver": "GTiff",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": "float32",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": float("nan"),
        "compress": "deflate",
        "zlevel": 1,  # a temporary file: fast compression matters more than its size
        "num_threads": "ALL_CPUS",  # GDAL compresses blocks on several threads
        "predictor": 3,
        "blockysize": 1,
        "BIGTIFF": "IF_SAFER",
    }


def _encode(probability: np.ndarray, threshold: float, mode: str, dtype: str) -> np.ndarray:
    """(n, w) probabilities with NaN as nodata -> (bands, n, w) output values."""
    invalid = np.isnan(probability)
    bands = []
    if mode in ("probability", "both"):
        if dtype == "uint8":
            scaled = np.rint(np.nan_to_num(probability) * UINT8_PROBABILITY_SCALE)
            bands.append(np.where(invalid, UINT8_NODATA, scaled).astype(np.uint8))
        else:
            bands.append(np.where(invalid, FLOAT_NODATA, probability).astype(np.float32))
    if mode in ("mask", "both"):
        nodata = UINT8_NODATA if dtype == "uint8" else FLOAT_NODATA
        mask = is_change(probability, threshold).astype(dtype)
        bands.append(np.where(invalid, nodata, mask).astype(dtype))
    return np.stack(bands)


def _write_geotiff(
    work: Path,
    out: Path,
    *,
    mode: str,
    dtype: str,
    threshold: float,
    cog: bool,
    tags: dict[str, str],
) -> None:
    import rasterio
    import rasterio.shutil

    descriptions = {
        "probability": ("change_probability",),
        "mask": ("change_mask",),
        "both": ("change_probability", "change_mask"),
    }[mode]
    with rasterio.open(work) as src:
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "count": len(descriptions),
            "dtype": dtype,
            "crs": src.crs,
            "transform": src.transform,
            "nodata": UINT8_NODATA if dtype == "uint8" else FLOAT_NODATA,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "num_threads": "ALL_CPUS",
            "predictor": 2 if dtype == "uint8" else 3,
            "BIGTIFF": "IF_SAFER",
        }
        target = out.with_name(out.name + ".gtiff") if cog else out
        with rasterio.open(target, "w", **profile) as dst:
            for first in range(0, src.height, OUTPUT_ROWS):
                n = min(OUTPUT_ROWS, src.height - first)
                window = ((first, first + n), (0, src.width))
                values = _encode(src.read(1, window=window), threshold, mode, dtype)
                dst.write(values, window=window)
            dst.update_tags(**tags)
            for i, text in enumerate(descriptions, start=1):
                dst.set_band_description(i, text)
    if cog:
        try:
            rasterio.shutil.copy(
                target,
                out,
                driver="COG",
                compress="deflate",
                predictor="YES",
                blocksize=256,
                overview_resampling="nearest" if mode != "probability" else "average",
                bigtiff="IF_SAFER",
            )
        finally:
            target.unlink(missing_ok=True)


def _write_png(work: Path, out: Path, *, mode: str, threshold: float) -> None:
    import rasterio
    from PIL import Image

    if mode == "both":
        raise ConfigError("a PNG holds one map: use --mode probability or --mode mask")
    with rasterio.open(work) as src:
        probability = src.read(1)
    if mode == "mask":
        pixels = np.where(is_change(probability, threshold), 255, 0).astype(np.uint8)
    else:
        pixels = np.rint(np.nan_to_num(probability) * 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").save(out, format="PNG")


def _resolve_runner(runner: TileRunner | PathLike, opts: SceneOptions) -> tuple[TileRunner, str]:
    if isinstance(runner, (str, os.PathLike)):
        loaded = load_runner(
            runner, runtime=opts.runtime, device=opts.device, precision=opts.precision
        )
        return loaded, str(runner)
    path = getattr(runner, "path", None)
    return runner, "" if path is None else str(path)


def predict_scene(
    runner_or_checkpoint: TileRunner | PathLike,
    before: PathLike | Sequence[PathLike],
    after: PathLike | Sequence[PathLike],
    out: PathLike,
    **options: Any,
) -> SceneResult:
    """Predict the change map of a scene pair and write it, tile by tile.

    Example:
        >>> predict_scene("model.pt", "t1.tif", "t2.tif", "change.tif",
        ...               polygons="change.gpkg", min_area=200.0)  # doctest: +SKIP

    Args:
        runner_or_checkpoint: A :class:`~dsifn.inference.runner.TileRunner`, or the path of a
            dsifn checkpoint (or ONNX model with ``runtime="onnxruntime"``).
        before: T1: a GeoTIFF (or any raster), a PNG/JPEG, or several band files stacked in
            the given order on the finest of their grids.
        after: T2, the same way; it must be on T1's grid unless ``align=True``.
        out: The change map: a GeoTIFF for rasters, a PNG for plain images.
        **options: Fields of :class:`SceneOptions`.

    Returns:
        What was written.

    Raises:
        OutputExistsError: If an output exists and ``overwrite`` is false (checked first).
        DataError: If the dates' grids or bands do not match (and ``align`` is false).
        InputError: If the band count does not fit the model.
        ConfigError: If an option is invalid or an optional dependency is missing.
    """
    import rasterio

    opts = SceneOptions(**options)
    # GDAL's block cache defaults to 5 % of RAM; bound it so peak memory does not grow with
    # the scene. A GDAL_CACHEMAX set by the user wins.
    # (rasterio passes an integer GDAL_CACHEMAX to GDAL in bytes.)
    env = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHE_MB * 2**20}
    with rasterio.Env(**env):
        return _predict_scene(runner_or_checkpoint, before, after, Path(out), opts)


def _predict_scene(
    runner_or_checkpoint: TileRunner | PathLike,
    before: PathLike | Sequence[PathLike],
    after: PathLike | Sequence[PathLike],
    out_path: Path,
    opts: SceneOptions,
) -> SceneResult:
    _check_outputs(out_path, opts)
    runner, model_name = _resolve_runner(runner_or_checkpoint, opts)
    contract = _reading(runner, model_name, opts)
    t1, t2 = open_pair(
        before,
        after,
        bands=contract.bands,
        nodata=contract.nodata,
        align=opts.align,
        resampling=contract.resampling,
    )
    with t1, t2:
        _check_pair(t1, runner, out_path, opts)
        grid, tile, overlap = _plan(runner, contract, t1, opts)
        scaling = scene_scaling(t1, t2, contract.scaling)
        tags = {
            "dsifn_version": __version__,
            "model": _describe(runner),
            "checkpoint": model_name,
            "before": " ".join(str(p) for p in _as_paths(before)),
            "after": " ".join(str(p) for p in _as_paths(after)),
            "bands": "all" if contract.bands is None else ",".join(map(str, contract.bands)),
            "scaling": scaling.description,
            "threshold": f"{contract.threshold:g}",
            "threshold_rule": contract.threshold_rule,
            "tile_size": str(tile),
            "overlap": str(overlap),
            "tta": str(opts.tta).lower(),
            "attention": opts.attention,
            "mode": opts.mode,
            "aligned": str(opts.align).lower(),
            "nodata": str(UINT8_NODATA if opts.dtype == "uint8" else FLOAT_NODATA),
        }
        count = _write_outputs(runner, t1, t2, grid, scaling, out_path, opts, contract, tags)
    return SceneResult(
        output=out_path,
        polygons=None if opts.polygons is None else Path(opts.polygons),
        quicklook=None if opts.quicklook is None else Path(opts.quicklook),
        polygon_count=count,
        tiles=len(grid),
        threshold=contract.threshold,
        tags=tags,
    )


def _check_outputs(out_path: Path, opts: SceneOptions) -> None:
    """Refuse outputs that exist or cannot be written, before any work."""
    for path in (out_path, opts.polygons, opts.quicklook):
        if path is not None:
            check_output_path(path, overwrite=opts.overwrite)
    if opts.quicklook is not None and Path(opts.quicklook).suffix.lower() != ".png":
        raise ConfigError(f"the quicklook is a PNG; name it .png, not {opts.quicklook}")
    if opts.polygons is not None:
        from dsifn.inference.polygons import check_polygon_output

        check_polygon_output(opts.polygons)


# Lines already said about each runner: a folder of pairs hears a notice once, not per pair.
_SAID: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _reading(runner: TileRunner, model_name: str, opts: SceneOptions) -> InputContract:
    """The model's input contract with the options that replace recorded values."""
    trained_tile = opts.attention == "tile" and runner.tile_size is None
    try:
        said = _SAID.setdefault(runner, set())
    except TypeError:  # a runner that cannot be weakly referenced
        said = set()
    return runner.contract.resolve(
        model_name or "the model",
        said,
        bands=opts.bands,
        scale=opts.scale,
        stretch=opts.stretch,
        threshold=opts.threshold,
        tile_size=opts.tile_size if trained_tile else None,
    )


def _check_pair(t1: SceneSource, runner: TileRunner, out_path: Path, opts: SceneOptions) -> None:
    plain = isinstance(t1, ArraySource)
    if plain and opts.cog:
        raise ConfigError("a Cloud-Optimized GeoTIFF needs georeferenced rasters, not plain images")
    if plain and out_path.suffix.lower() != ".png":
        raise ConfigError(f"plain images give a PNG map; name the output .png, not {out_path}")
    if not plain and out_path.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"the change map is a GeoTIFF; name the output .tif, not {out_path}")
    if t1.count != runner.in_channels:
        raise InputError(
            f"the model takes {runner.in_channels} band(s) per date but the images have "
            f"{t1.count}; choose bands with --bands (e.g. --bands 4,3,2)"
        )


def _plan(
    runner: TileRunner, contract: InputContract, t1: SceneSource, opts: SceneOptions
) -> tuple[TileGrid | WindowGrid, int, int]:
    """The tiles (or scene-attention windows), their side and their overlap."""
    height, width = t1.grid.height, t1.grid.width
    if opts.attention == "scene":
        radius = _attention_runner(runner).receptive_radius
        tile = DEFAULT_WINDOW if opts.tile_size is None else opts.tile_size
        windows = WindowGrid.plan(height, width, tile, radius)
        return windows, tile, 2 * windows.margin
    return plan_tiles(runner, height, width, opts.tile_size or contract.tile_size, opts.overlap)


def _describe(runner: TileRunner) -> str:
    describe = getattr(runner, "describe", None)
    return str(describe()) if callable(describe) else type(runner).__name__


def _write_outputs(
    runner: TileRunner,
    t1: SceneSource,
    t2: SceneSource,
    grid: TileGrid | WindowGrid,
    scaling: Scaling,
    out_path: Path,
    opts: SceneOptions,
    contract: InputContract,
    tags: dict[str, str],
) -> int | None:
    """Infer into a working raster, then write the map, polygons and quicklook from it.

    Every output is written under a temporary name first and all are moved into place at the
    end, so an error or interrupt before then leaves none of them.
    """
    threshold = contract.threshold
    out_path.parent.mkdir(parents=True, exist_ok=True)
    finals = [out_path, *(p for p in (opts.polygons, opts.quicklook) if p is not None)]
    with _work_folder(out_path.parent) as tmp:
        work = Path(tmp) / "probability.tif"
        _infer_to_file(runner, t1, t2, grid, scaling, work, opts)
        with _staged([Path(p) for p in finals], overwrite=opts.overwrite) as staged:
            partial = staged[0]
            if isinstance(t1, ArraySource):
                _write_png(work, partial, mode=opts.mode, threshold=threshold)
            else:
                _write_geotiff(
                    work,
                    partial,
                    mode=opts.mode,
                    dtype=opts.dtype,
                    threshold=threshold,
                    cog=opts.cog,
                    tags=tags,
                )
            count = None
            if opts.polygons is not None:
                from dsifn.inference.polygons import write_polygons

                count = write_polygons(
                    work, staged[1], threshold=threshold, min_area=opts.min_area, overwrite=True
                )
            if opts.quicklook is not None:
                from dsifn.inference.quicklook import write_quicklook

                write_quicklook(t1, t2, work, staged[-1], threshold=threshold, overwrite=True)
    return count


_OWNER = "owner"  # "HOST PID" of the run that made a work folder


def _work_folder(parent: Path) -> tempfile.TemporaryDirectory[str]:
    """A private ``.dsifn-*`` folder beside the outputs, after removing stale ones.

    A run killed outright (SIGKILL, power loss) cannot clean up; its folder names its owner, and
    the next run in that folder removes it once that process is gone.
    """
    _remove_stale(parent)
    folder = tempfile.TemporaryDirectory(prefix=".dsifn-", dir=parent)
    (Path(folder.name) / _OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return folder


def _remove_stale(parent: Path) -> None:
    """Remove ``.dsifn-*`` folders whose owner, a process on this host, no longer runs.

    Folders without an owner file, of another host, or of a live (or unknown) process are left:
    only what is surely a dead run's working data goes.
    """
    host = socket.gethostname()
    for folder in parent.glob(".dsifn-*"):
        try:
            owner_host, pid = (folder / _OWNER).read_text().split()
            if owner_host != host or _alive(int(pid)):
                continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@contextlib.contextmanager
def _staged(finals: Sequence[Path], *, overwrite: bool) -> Iterator[list[Path]]:
    """Yield a path per output, under its real name in a private folder beside it.

    When the block succeeds all are moved into place, the first (the map) last, so a map on
    disk means its polygons and quicklook are there too; when it raises, none are.
    """
    for final in finals:
        check_output_path(final, overwrite=overwrite)
    with contextlib.ExitStack() as stack:
        staged = []
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            folder = stack.enter_context(_work_folder(final.parent))
            staged.append(Path(folder) / final.name)
        yield staged
        for final in finals:  # one appeared while writing: replace nothing
            check_output_path(final, overwrite=overwrite)
        for path, final in reversed(list(zip(staged, finals, strict=True))):
            move_into_place(path, final)


def _attention_runner(runner: TileRunner) -> AttentionRunner:
    if not isinstance(runner, AttentionRunner):
        raise ConfigError(
            "scene-wide attention needs a model that can fix its channel attention: use the "
            "torch runtime with a dsifn checkpoint"
        )
    if runner.tile_size is not None:
        raise ConfigError(
            f"this model takes {runner.tile_size}x{runner.tile_size} tiles only, so it has no "
            "whole-scene prediction to match: use --attention tile"
        )
    return runner


def _infer_to_file(
    runner: TileRunner,
    t1: SceneSource,
    t2: SceneSource,
    grid: TileGrid | WindowGrid,
    scaling: Scaling,
    work: Path,
    opts: SceneOptions,
) -> None:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(work, "w", **_work_profile(t1.grid)) as dst:

            def write_rows(first: int, values: np.ndarray) -> None:
                dst.write(values[None], window=((first, first + values.shape[0]), (0, grid.width)))

            if isinstance(grid, WindowGrid):
                run_scene_attention(
                    _attention_runner(runner),
                    t1,
                    t2,
                    grid,
                    scaling,
                    normalizer(runner),
                    write_rows,
                    batch_size=opts.batch_size,
                    tta=opts.tta,
                    progress=opts.progress,
                )
                return
            run_tiles(
                runner,
                t1,
                t2,
                grid,
                scaling,
                write_rows,
                batch_size=opts.batch_size,
                tta=opts.tta,
                progress=opts.progress,
            )
