"""Change maps for whole scenes: planned once, tiled, blended, windowed, georeferenced.

:func:`predict_scene` checks every output, opens the pair through the one pair reader
(:func:`dsifn.io.pairs.open_pair`), makes one :class:`ScenePlan` and carries it:

1. The plan (:func:`plan_scene`) fixes everything a scene needs decided: the model's input
   contract with the options that replace recorded values, the tiles (or the windows of
   scene-wide attention) with their side and overlap, the tile loop that runs them, the
   scaling, the map's format and the metadata it records. Nothing further down decides again.
2. Inference runs the plan's tile loop (:func:`dsifn.inference.pipeline.run_tiles` or
   :func:`dsifn.inference.scene_attention.run_scene_attention`); finished rows go to a float32
   working raster (NaN where either date has no data) in a private folder beside the output.
3. The map, polygons and quicklook are written from the working raster
   (:mod:`dsifn.inference.outputs`) and moved into place together
   (:func:`dsifn.io.atomic.staged`).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsifn.contract import InputContract, say
from dsifn.errors import ConfigError, InputError
from dsifn.inference.loading import load_runner
from dsifn.inference.options import (
    AttentionMode,
    OutputDtype,
    OutputMode,
    PathLike,
    SceneOptions,
    ScenePlan,
    SceneResult,
    TileLoop,
)
from dsifn.inference.outputs import (
    FLOAT_NODATA,
    UINT8_NODATA,
    check_map_format,
    scene_tags,
    write_outputs,
)
from dsifn.inference.pipeline import plan_tiles, run_tiles, tile_side
from dsifn.inference.runner import TileRunner
from dsifn.inference.scene_attention import WindowGrid, as_attention_runner, run_scene_attention
from dsifn.inference.tiling import TileGrid
from dsifn.io.atomic import check_output_path, staged, work_folder
from dsifn.io.images import source_names
from dsifn.io.pairs import ImagePair, open_pair

__all__ = [
    "FLOAT_NODATA",
    "UINT8_NODATA",
    "AttentionMode",
    "OutputDtype",
    "OutputMode",
    "SceneOptions",
    "ScenePlan",
    "SceneResult",
    "plan_scene",
    "predict_scene",
]

# GDAL block cache during scene inference, in MiB.
GDAL_CACHE_MB = 128

Files = PathLike | Sequence[PathLike]


def predict_scene(
    runner_or_checkpoint: TileRunner | PathLike,
    before: Files,
    after: Files,
    out: PathLike,
    options: SceneOptions | None = None,
    **fields: Any,
) -> SceneResult:
    """Predict the change map of a scene pair and write it, tile by tile.

    Example:
        >>> predict_scene("model.pt", "t1.tif", "t2.tif", "change.tif",
        ...               polygons="change.gpkg", min_area=200.0)  # doctest: +SKIP

    Args:
        runner_or_checkpoint: A :class:`~dsifn.inference.runner.TileRunner`, or the path of a
            model file (a dsifn checkpoint, an ONNX model, an OpenVINO ``.xml``).
        before: T1: a GeoTIFF (or any raster or GDAL dataset name), a PNG/JPEG, or several band
            files stacked in the given order on the finest of their grids.
        after: T2, the same way; it must be on T1's grid unless ``align=True``. With band
            names (the contract's, or ``bands``) each date may also be a folder of band files,
            a SAFE product or a STAC item (a JSON file or an http(s) URL: its assets are read
            in windows over HTTP and scaled by their ``raster:bands``).
        out: The change map: a GeoTIFF for rasters, a PNG for plain images.
        options: How to tile, read and write (:class:`SceneOptions`), made once by the caller.
        **fields: Fields of :class:`SceneOptions`, replacing those of ``options``.

    Returns:
        What was written.

    Raises:
        OutputExistsError: If an output exists and ``overwrite`` is false (checked first).
        DataError: If the dates' grids or bands do not match (and ``align`` is false).
        InputError: If the band count does not fit the model.
        ConfigError: If an option is invalid or an optional dependency is missing.
    """
    import rasterio

    opts = options or SceneOptions()
    if fields:
        opts = dataclasses.replace(opts, **fields)
    # GDAL's block cache defaults to 5 % of RAM; bound it so peak memory does not grow with
    # the scene. A GDAL_CACHEMAX set by the user wins. (rasterio passes an integer in bytes.)
    env = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": GDAL_CACHE_MB * 2**20}
    with rasterio.Env(**env):
        check_outputs(Path(out), opts)
        runner, model_name = _resolve_runner(runner_or_checkpoint, opts)
        contract, notices = _reading(runner, model_name, opts)
        reading = dataclasses.replace(contract.reading(), offset=opts.offset)
        with open_pair(before, after, reading, align=opts.align) as pair:
            plan = plan_scene(
                runner, pair, contract, opts, model=model_name, inputs=(before, after)
            )
            check_map_format(Path(out), plain=plan.plain, opts=opts)
            # Said once the pair is known to fit: no line before an error.
            say([*notices, *pair.notices], _said(runner))
            count = _write(runner, pair, plan, Path(out), opts)
    return SceneResult(
        output=Path(out),
        polygons=None if opts.polygons is None else Path(opts.polygons),
        quicklook=None if opts.quicklook is None else Path(opts.quicklook),
        polygon_count=count,
        tiles=len(plan.tiles),
        threshold=plan.contract.threshold,
        tags=plan.tags,
    )


def check_outputs(out_path: Path, opts: SceneOptions) -> None:
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


def _said(runner: TileRunner) -> set[str]:
    try:
        return _SAID.setdefault(runner, set())
    except TypeError:  # a runner that cannot be weakly referenced
        return set()


def _reading(
    runner: TileRunner, model_name: str, opts: SceneOptions
) -> tuple[InputContract, list[str]]:
    """The model's input contract with the options applied, and the lines that say so."""
    # An asked tile side is worth a word against the trained one (plain tiles, any-size model).
    trained_tile = opts.attention == "tile" and runner.tile_size is None
    return runner.contract.resolved(
        model_name or "the model",
        bands=opts.bands,
        scale=opts.scale,
        stretch=opts.stretch,
        threshold=opts.threshold,
        tile_size=opts.tile_size if trained_tile else None,
    )


def plan_scene(
    runner: TileRunner,
    pair: ImagePair,
    contract: InputContract,
    opts: SceneOptions,
    *,
    model: str = "",
    inputs: tuple[Files, Files] = ((), ()),
) -> ScenePlan:
    """Decide, once, how a scene pair is tiled, run and written.

    Args:
        runner: The model.
        pair: Both dates, open (read as ``contract`` says).
        contract: The model's input contract with the options applied.
        opts: What was asked.
        model: The model file's name, for the map's metadata.
        inputs: The T1 and T2 files as given, for the map's metadata.

    Raises:
        InputError: If the band count does not fit the model.
        ConfigError: If the options do not fit the model or the map's format.
    """
    if pair.count != contract.band_count:
        raise InputError(
            f"the model takes {contract.band_count} band(s) per date but the images have "
            f"{pair.count}; choose them, e.g. `bands='4,3,2'`"
        )
    height, width = pair.grid.height, pair.grid.width
    tiles: TileGrid | WindowGrid
    run: TileLoop
    if opts.attention == "scene":
        tile = tile_side(runner.tile_size, opts.tile_size, contract.tile_size, attention="scene")
        tiles = WindowGrid.plan(height, width, tile, as_attention_runner(runner).receptive_radius)
        overlap, run = 2 * tiles.margin, run_scene_attention
    else:
        tiles, tile, overlap = plan_tiles(
            runner, height, width, opts.tile_size, opts.overlap, contract=contract
        )
        run = run_tiles
    tags = scene_tags(
        model=_describe(runner),
        checkpoint=model,
        before=source_names(inputs[0]),
        after=source_names(inputs[1]),
        contract=contract,
        scaling=pair.scaling,
        radiometry=pair.radiometry,
        tile=tile,
        overlap=overlap,
        opts=opts,
    )
    return ScenePlan(contract, tiles, run, pair.plain, tags)


def _describe(runner: TileRunner) -> str:
    describe = getattr(runner, "describe", None)
    return str(describe()) if callable(describe) else type(runner).__name__


def _write(
    runner: TileRunner, pair: ImagePair, plan: ScenePlan, out_path: Path, opts: SceneOptions
) -> int | None:
    """Infer into a working raster, then write the map, polygons and quicklook from it.

    Every output is written under a temporary name first and all are moved into place at the
    end, so an error or interrupt before then leaves none of them.

    Returns:
        The number of polygons written, or None when none were asked for.
    """
    finals = [out_path, *(Path(p) for p in (opts.polygons, opts.quicklook) if p is not None)]
    with work_folder(out_path.parent) as tmp:
        work = Path(tmp) / "probability.tif"
        _infer(runner, pair, plan, work, opts)
        with staged(finals, overwrite=opts.overwrite) as paths:
            return write_outputs(work, paths, pair, plan, opts)


def _infer(
    runner: TileRunner, pair: ImagePair, plan: ScenePlan, work: Path, opts: SceneOptions
) -> None:
    """Run the plan's tile loop into the working raster: float32, NaN where there is no data."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    grid = pair.grid
    profile = {
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
        "num_threads": "ALL_CPUS",
        "predictor": 3,
        "blockysize": 1,  # rows arrive in order: each strip is written once, whole
        "BIGTIFF": "IF_SAFER",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(work, "w", **profile) as dst:

            def write_rows(first: int, values: np.ndarray) -> None:
                dst.write(values[None], window=((first, first + values.shape[0]), (0, grid.width)))

            plan.run(
                runner,
                pair,
                plan.tiles,
                write_rows,
                batch_size=opts.batch_size,
                tta=opts.tta,
                progress=opts.progress,
            )
