"""The working raster of a scene: its probabilities inferred tile by tile into a float32 file.

Finished rows of plain tiles (:func:`~dsifn.inference.pipeline.run_tiles`) or of scene-wide
attention windows (:func:`~dsifn.inference.scene_attention.run_scene_attention`) go into a
float32 GeoTIFF, NaN where either date is invalid, from which every output is then written
(:mod:`dsifn.inference.outputs`); the scene is never held in memory whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dsifn.inference.options import SceneOptions
from dsifn.inference.pipeline import normalizer, run_tiles
from dsifn.inference.runner import TileRunner
from dsifn.inference.scene_attention import WindowGrid, as_attention_runner, run_scene_attention
from dsifn.inference.sources import SceneSource
from dsifn.inference.tiling import TileGrid
from dsifn.scaling import Scaling

__all__ = ["infer_to_file", "work_profile"]


def work_profile(grid: Any) -> dict[str, Any]:
    """The rasterio profile of a working raster on ``grid`` (a :class:`PixelGrid`)."""
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


def infer_to_file(
    runner: TileRunner,
    t1: SceneSource,
    t2: SceneSource,
    grid: TileGrid | WindowGrid,
    scaling: Scaling,
    work: Path,
    opts: SceneOptions,
) -> None:
    """Predict every tile (or window) of a scene pair into the working raster ``work``.

    Args:
        runner: The model.
        t1: First date.
        t2: Second date, on the same grid.
        grid: Plain tiles, or the windows of scene-wide attention.
        scaling: Raw values to [0, 1].
        work: The float32 GeoTIFF to write.
        opts: Batch size, test-time augmentation and progress display.
    """
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(work, "w", **work_profile(t1.grid)) as dst:

            def write_rows(first: int, values: np.ndarray) -> None:
                dst.write(values[None], window=((first, first + values.shape[0]), (0, grid.width)))

            batch, tta, progress = opts.batch_size, opts.tta, opts.progress
            if isinstance(grid, WindowGrid):
                run_scene_attention(
                    as_attention_runner(runner),
                    t1,
                    t2,
                    grid,
                    scaling,
                    normalizer(runner),
                    write_rows,
                    batch_size=batch,
                    tta=tta,
                    progress=progress,
                )
            else:
                run_tiles(
                    runner,
                    t1,
                    t2,
                    grid,
                    scaling,
                    write_rows,
                    batch_size=batch,
                    tta=tta,
                    progress=progress,
                )
