"""Pixels that cannot be read or mean nothing: corrupt files in one line, NaN as nodata."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import main
from fixtures.rasters import write_geotiff


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    return save_checkpoint(path, DSIFN(encoder_weights=None))


def test_a_truncated_geotiff_is_named_in_one_line(model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    t1 = write_geotiff(
        tmp_path / "t1.tif", rng.integers(0, 255, (3, 256, 256), dtype=np.uint8), nodata=None
    )
    t2 = write_geotiff(
        tmp_path / "t2.tif",
        rng.integers(0, 255, (3, 256, 256), dtype=np.uint8),
        nodata=None,
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    )
    data = t2.read_bytes()
    t2.write_bytes(data[: len(data) // 2])  # the header and tile index stay, pixels are cut
    out = tmp_path / "out.tif"
    argv = ["predict", "--checkpoint", str(model), "--before", str(t1), "--after", str(t2)]
    assert main([*argv, "--out", str(out), "--quiet", "--tile-size", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "T2 file" in err[0] and "corrupt or truncated" in err[0] and "t2.tif" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t1.tif", "t2.tif"]


def test_nan_pixels_of_a_float_scene_are_nodata_pixel_by_pixel(model, tmp_path, capsys):
    rng = np.random.default_rng(1)
    t1 = rng.random((3, 40, 40), dtype=np.float32)
    t1[1, 5, 7] = np.nan  # one band of one pixel, no nodata tag anywhere
    t1[:, 30, 30] = np.nan
    before = write_geotiff(tmp_path / "t1.tif", t1, nodata=None)
    t2 = rng.random((3, 40, 40), dtype=np.float32)
    after = write_geotiff(tmp_path / "t2.tif", t2, nodata=None)
    out = tmp_path / "out.tif"
    argv = ["predict", "--checkpoint", str(model), "--before", str(before)]
    assert main([*argv, "--after", str(after), "--out", str(out), "--quiet"]) == 0
    with rasterio.open(out) as src:
        probability, nodata = src.read(1), src.nodata
    missing = probability == nodata
    assert missing[5, 7] and missing[30, 30] and missing.sum() == 2
    assert np.isfinite(probability).all()
