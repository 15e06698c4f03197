"""Change maps for whole scenes: tiled, blended, windowed, georeferenced.

:func:`predict_scene` runs in three passes, none of which holds the scene in memory:

1. Inference (:mod:`dsifn.inference.working`): overlapping tiles, a batch at a time, blended
   strip by strip (:class:`~dsifn.inference.tiling.StripBlender`) on the threads of the tile
   pipeline (:mod:`dsifn.inference.pipeline`); finished rows go to a float32 working raster (NaN
   where either date is invalid) in a temporary folder beside the output.
2. The output (GeoTIFF, Cloud-Optimized GeoTIFF or PNG) is written from the working raster in
   row blocks (:mod:`dsifn.inference.outputs`).
3. Optional polygons (:mod:`dsifn.inference.polygons`) and quicklook
   (:mod:`dsifn.inference.quicklook`) are made from the working raster.

Every output is written under a private folder beside it and all are moved into place at the
end (:func:`dsifn.io.atomic.staged`).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsifn.contract import InputContract
from dsifn.errors import ConfigError, InputError
from dsifn.inference.loading import load_runner
from dsifn.inference.options import (
    AttentionMode,
    OutputDtype,
    OutputMode,
    PathLike,
    SceneOptions,
    SceneResult,
)
from dsifn.inference.outputs import (
    FLOAT_NODATA,
    UINT8_NODATA,
    check_map_format,
    scene_tags,
    write_outputs,
)
from dsifn.inference.pipeline import plan_tiles
from dsifn.inference.runner import TileRunner
from dsifn.inference.scene_attention import DEFAULT_WINDOW, WindowGrid, as_attention_runner
from dsifn.inference.sources import SceneSource, as_paths, open_pair, scene_scaling
from dsifn.inference.tiling import TileGrid
from dsifn.inference.working import infer_to_file
from dsifn.io.atomic import check_output_path, staged, work_folder
from dsifn.io.images import ArraySource
from dsifn.scaling import Scaling

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

# GDAL block cache during scene inference, in MiB.
GDAL_CACHE_MB = 128


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
    """Check the outputs, load the model, open the pair, plan the tiles, then write."""
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
        plain = isinstance(t1, ArraySource)
        check_map_format(out_path, plain=plain, opts=opts)
        _check_bands(t1, runner)
        grid, tile, overlap = _plan(runner, contract, t1, opts)
        scaling = scene_scaling(t1, t2, contract.scaling)
        tags = scene_tags(
            model=_describe(runner),
            checkpoint=model_name,
            before=as_paths(before),
            after=as_paths(after),
            contract=contract,
            scaling=scaling,
            tile=tile,
            overlap=overlap,
            opts=opts,
        )
        count = _write(runner, (t1, t2), grid, scaling, out_path, plain, contract, tags, opts)
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


def _resolve_runner(runner: TileRunner | PathLike, opts: SceneOptions) -> tuple[TileRunner, str]:
    """The runner, loaded if given as a path, and the name of its file ("" if none)."""
    if isinstance(runner, (str, os.PathLike)):
        loaded = load_runner(
            runner, runtime=opts.runtime, device=opts.device, precision=opts.precision
        )
        return loaded, str(runner)
    path = getattr(runner, "path", None)
    return runner, "" if path is None else str(path)


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


def _check_bands(t1: SceneSource, runner: TileRunner) -> None:
    if t1.count != runner.in_channels:
        raise InputError(
            f"the model takes {runner.in_channels} band(s) per date but the images have "
            f"{t1.count}; choose them, e.g. `bands='4,3,2'`"
        )


def _plan(
    runner: TileRunner, contract: InputContract, t1: SceneSource, opts: SceneOptions
) -> tuple[TileGrid | WindowGrid, int, int]:
    """The tiles (or scene-attention windows), their side and their overlap."""
    height, width = t1.grid.height, t1.grid.width
    if opts.attention == "scene":
        radius = as_attention_runner(runner).receptive_radius
        tile = DEFAULT_WINDOW if opts.tile_size is None else opts.tile_size
        windows = WindowGrid.plan(height, width, tile, radius)
        return windows, tile, 2 * windows.margin
    return plan_tiles(runner, height, width, opts.tile_size or contract.tile_size, opts.overlap)


def _describe(runner: TileRunner) -> str:
    describe = getattr(runner, "describe", None)
    return str(describe()) if callable(describe) else type(runner).__name__


def _write(
    runner: TileRunner,
    pair: tuple[SceneSource, SceneSource],
    grid: TileGrid | WindowGrid,
    scaling: Scaling,
    out_path: Path,
    plain: bool,
    contract: InputContract,
    tags: dict[str, str],
    opts: SceneOptions,
) -> int | None:
    """Infer into a working raster, then write the map, polygons and quicklook from it.

    Every output is written under a temporary name first and all are moved into place at the
    end, so an error or interrupt before then leaves none of them.

    Returns:
        The number of polygons written, or None when none were asked for.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    finals = [out_path, *(Path(p) for p in (opts.polygons, opts.quicklook) if p is not None)]
    with work_folder(out_path.parent) as tmp:
        work = Path(tmp) / "probability.tif"
        infer_to_file(runner, *pair, grid, scaling, work, opts)
        with staged(finals, overwrite=opts.overwrite) as paths:
            return write_outputs(
                work,
                paths,
                *pair,
                plain=plain,
                threshold=contract.threshold,
                tags=tags,
                opts=opts,
            )
