"""The scene case: ``predict_scene`` on a generated GeoTIFF pair against the runner's own rate.

Three cases, each with the runner ``dsifn predict`` uses (the eager fast path; not compiled,
since a scene's last, smaller batch would recompile in the middle of the timing):

- ``raw runner``: the runner alone on batches of tiles already in memory, the pixel rate a
  scene should match;
- ``pipeline only``: ``predict_scene`` with a model that costs nothing, the pipeline's own
  ceiling (reading, scaling, normalising, blending, writing), which the model's rate must stay
  under;
- ``predict_scene``: the whole scene with the real runner.

One "step" of the last two is the whole scene, timed once: their rates count the scene's own
pixels. The ratios compare them with the raw runner's pixel rate.
"""

from __future__ import annotations

import copy
import functools
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dsifn.benchmark.config import BenchmarkConfig
from dsifn.benchmark.hardware import peak_memory, peak_memory_of, reset_peak_memory, sync
from dsifn.benchmark.inference import path_description
from dsifn.benchmark.results import CaseResult
from dsifn.benchmark.timing import case_result, interleaved
from dsifn.devices import Precision
from dsifn.inference.runner import TileRunner, TorchRunner
from dsifn.models.registry import ChangeNetwork
from dsifn.testing import StandInRunner, write_pair

if TYPE_CHECKING:
    from dsifn.inference.scene import SceneResult

__all__ = ["measure_scene"]


def _raw_case(
    runner: TorchRunner, config: BenchmarkConfig, device: torch.device, batch: int
) -> CaseResult:
    """The runner alone, on batches of tiles already in memory: the pixel rate to match."""
    size = config.size
    rng = np.random.default_rng(config.seed)
    bands = runner.contract.band_count
    tiles = rng.standard_normal((2, batch, bands, size, size), dtype=np.float32)

    def raw() -> None:
        runner(tiles[0], tiles[1])

    times, warm = interleaved({"raw": raw}, config, device)
    path = path_description(device, runner.precision, False, fold=True)
    return case_result(
        "scene",
        "raw runner",
        f"TorchRunner on in-memory {size}px tiles ({path})",
        batch=batch,
        size=size,
        times=times["raw"],
        warmup=warm["raw"],
        memory=peak_memory_of(raw, device),
        flops=None,
        peak=None,
    )


def _timed_prediction(
    model: TileRunner,
    out: Path,
    *,
    pair: tuple[Path, Path],
    tile: int,
    batch: int,
    device: torch.device,
) -> tuple[SceneResult, float, int | None]:
    """``predict_scene`` once: its result, its seconds and its peak memory."""
    from dsifn.inference.scene import predict_scene

    sync(device)
    reset_peak_memory(device)
    start = time.perf_counter()
    result = predict_scene(
        model, pair[0], pair[1], out, tile_size=tile, batch_size=batch, progress=False
    )
    sync(device)
    return result, time.perf_counter() - start, peak_memory(device)


def _whole_scene_case(
    path: str, what: str, seconds: float, memory: int | None, config: BenchmarkConfig, batch: int
) -> CaseResult:
    """A case whose one "step" is the whole scene: its rates count the scene's own pixels."""
    case = case_result(
        "scene",
        path,
        what,
        batch=batch,
        size=config.size,
        times=[seconds],
        warmup=0.0,
        memory=memory,
        flops=None,
        peak=None,
    )
    case.pairs_per_second = 1.0 / seconds
    case.megapixels_per_second = config.scene_size**2 / seconds / 1e6
    return case


def measure_scene(
    base_model: ChangeNetwork,
    config: BenchmarkConfig,
    device: torch.device,
    precision: Precision,
    batch: int,
) -> tuple[list[CaseResult], dict[str, float]]:
    """Time the raw runner, the pipeline alone and the whole scene (see the module docstring).

    Returns:
        The three cases, and the scene's and the pipeline's pixel rates over the raw runner's.
    """
    # The runner as dsifn predict uses it: the eager fast path.
    runner = TorchRunner(copy.deepcopy(base_model), device=str(device), precision=precision)
    raw = _raw_case(runner, config, device, batch)
    with tempfile.TemporaryDirectory(prefix="dsifn-bench-") as tmp:
        folder = Path(tmp)
        side, bands = config.scene_size, runner.contract.band_count
        pair = write_pair(folder, side, bands=bands, dtype="uint8", seed=config.seed)
        predict = functools.partial(
            _timed_prediction, pair=pair, tile=config.size, batch=batch, device=device
        )
        constant = StandInRunner(bands, "constant", contract=runner.contract)
        _, pipeline_seconds, pipeline_memory = predict(constant, folder / "pipeline.tif")
        result, seconds, memory = predict(runner, folder / "change.tif")
    pipeline = _whole_scene_case(
        "pipeline only",
        "predict_scene with a constant model: reading, scaling, blending, writing",
        pipeline_seconds,
        pipeline_memory,
        config,
        batch,
    )
    scene = _whole_scene_case(
        "predict_scene",
        f"{config.scene_size}px GeoTIFF pair, {result.tiles} tiles, overlap "
        f"{result.tags.get('overlap', '?')}px",
        seconds,
        memory,
        config,
        batch,
    )
    tile_rate = result.tiles * config.size**2 / seconds / 1e6
    scene.extra = {"tiles": result.tiles, "tile_megapixels_per_second": tile_rate}
    raw_rate = raw.megapixels_per_second
    ratios = {
        "scene_vs_raw_pixels": scene.megapixels_per_second / raw_rate,
        "scene_tiles_vs_raw": tile_rate / raw_rate,
        "pipeline_vs_raw_pixels": pipeline.megapixels_per_second / raw_rate,
    }
    return [raw, pipeline, scene], ratios
