"""Scene inference holds no more of a scene in memory when the scene is taller."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from dsifn.inference.scene import predict_scene
from fixtures.rasters import write_geotiff
from fixtures.runners import AttentionStandIn, LocalRunner

WIDTH = 1024
MIB = 2**20
# Tiles (windows) small enough that even the short scene keeps every reader thread busy: the
# batches read ahead then weigh the same in both scenes.
TILE = 256


def _peak_numpy_memory(tmp_path, height, attention):
    # Peak of the memory traced while predict_scene runs, in bytes.
    data = np.random.default_rng(0).integers(1, 256, (1, height, WIDTH), dtype=np.uint8)
    t1 = write_geotiff(tmp_path / f"t1_{height}.tif", data)
    t2 = write_geotiff(tmp_path / f"t2_{height}.tif", data[:, ::-1].copy())
    runner = AttentionStandIn(bands=1) if attention == "scene" else LocalRunner(bands=1)
    del data
    tracemalloc.start()
    try:
        predict_scene(
            runner, t1, t2, tmp_path / f"change_{height}.tif", attention=attention,
            tile_size=TILE, progress=False,
        )  # fmt: skip
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("attention", ["tile", "scene"])
def test_peak_memory_does_not_grow_with_the_scene_height(tmp_path, attention):
    """A 1024 x 8192 scene peaks no higher than a 1024 x 1024 one (plain tiles and windows).

    Measured with tracemalloc, which counts every numpy array (numpy reports its buffers to
    it, on every thread): the tiles read, the blend strips, the rows written. Everything that
    scales with the scene in this pipeline is a numpy array. Peak RSS is not used: GDAL's block
    cache (bounded, up to GDAL_CACHEMAX) legitimately fills further on a larger scene, and the
    allocator keeps freed pages per thread, so RSS grows with the scene's height without any
    array doing so. Holding the 8192 rows whole would add at least the float32 map,
    32 MiB, four times the slack allowed.
    """
    short = _peak_numpy_memory(tmp_path, WIDTH, attention)
    tall = _peak_numpy_memory(tmp_path, 8 * WIDTH, attention)
    whole_map = 8 * WIDTH * WIDTH * np.dtype(np.float32).itemsize
    slack = 8 * MIB
    assert slack * 4 <= whole_map
    assert tall <= short + slack, f"peak {tall / MIB:.1f} MiB vs {short / MIB:.1f} MiB"
