"""A pixel whose probability equals the threshold is no change in every output (p > t)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from dsifn.contract import InputContract
from dsifn.inference.scene import predict_scene
from dsifn.metrics import ConfusionMatrix, ThresholdSweep
from dsifn.normalization import Normalization
from dsifn.testing import StandInRunner
from fixtures.rasters import write_geotiff

# T2's value 77 becomes p = 77 / 255 in float32; the threshold is exactly that number.
AT, ABOVE = 77, 78
THRESHOLD = float(np.float32(AT) / np.float32(255))


def _t2_runner() -> StandInRunner:
    """Stand-in whose probability is T2's first band (identity normalisation)."""
    identity = Normalization(mean=(0.0,), std=(1.0,))
    return StandInRunner(1, "band", contract=InputContract(1, identity, threshold=THRESHOLD))


def _scene(tmp_path, suffix):
    t1 = np.full((1, 32, 32), 10, dtype=np.uint8)
    t2 = np.full((1, 32, 32), 10, dtype=np.uint8)
    t2[0, 4:10, 4:10] = AT  # exactly at the threshold: no change
    t2[0, 20:24, 20:26] = ABOVE  # above it: change
    paths = []
    for name, data in (("t1", t1), ("t2", t2)):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".png":
            Image.fromarray(data[0]).save(path)
        else:
            write_geotiff(path, data, nodata=None)
        paths.append(path)
    return paths


def _expected():
    change = np.zeros((32, 32), dtype=bool)
    change[20:24, 20:26] = True
    return change


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_geotiff_mask_band_polygons_and_quicklook(tmp_path, dtype):
    before, after = _scene(tmp_path, ".tif")
    result = predict_scene(
        _t2_runner(),
        before,
        after,
        tmp_path / "map.tif",
        mode="both",
        dtype=dtype,
        polygons=tmp_path / "p.geojson",
        quicklook=tmp_path / "q.png",
        progress=False,
    )
    assert result.threshold == THRESHOLD
    with rasterio.open(result.output) as src:
        probability, mask = src.read(1), src.read(2)
    np.testing.assert_array_equal(mask == 1, _expected())
    if dtype == "float32":
        assert (probability[4:10, 4:10] == np.float32(THRESHOLD)).all()  # really at t
    features = json.loads((tmp_path / "p.geojson").read_text())["features"]
    assert [f["properties"]["pixels"] for f in features] == [24]
    # Just below the threshold the 36 pixels at it turn red too: at it, they are not.
    lower = predict_scene(
        _t2_runner(),
        before,
        after,
        tmp_path / "low.tif",
        threshold=THRESHOLD - 1e-6,
        quicklook=tmp_path / "low.png",
        progress=False,
    )
    assert lower.threshold < THRESHOLD
    assert _reds(tmp_path / "low.png") > _reds(tmp_path / "q.png") > 0


def _reds(path):
    picture = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((picture[..., 0] - picture[..., 1] > 60).sum())


def test_png_mask(tmp_path):
    before, after = _scene(tmp_path, ".png")
    predict_scene(_t2_runner(), before, after, tmp_path / "m.png", mode="mask", progress=False)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "m.png")) == 255, _expected())


def test_metrics_and_threshold_sweep():
    prob = torch.full((1, 1, 2, 2), THRESHOLD, dtype=torch.float32)
    prob[0, 0, 1, 1] = float(np.float32(ABOVE) / np.float32(255))
    target = torch.ones_like(prob)
    cm = ConfusionMatrix(THRESHOLD)
    cm.update(prob, target)
    assert (cm.tp, cm.fn) == (1, 3)
    # The sweep's grid threshold k / bins equals its confusion matrix's, pixel for pixel.
    grid = ThresholdSweep(bins=4)
    at_grid = torch.tensor([[[[0.25, 0.5], [0.75, 1.0]]]])
    grid.update(at_grid, torch.ones_like(at_grid))
    for k in range(5):
        matrix = ConfusionMatrix(k / 4)
        matrix.update(at_grid, torch.ones_like(at_grid))
        assert grid.counts_at(k / 4) == matrix.counts
