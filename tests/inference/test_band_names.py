"""Band names (B04, B03, B02) pick band files by the name their file carries, in order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from dsifn.bands import parse_bands
from dsifn.errors import ConfigError, InputError
from dsifn.inference.scene import predict_scene
from dsifn.io.images import band_files, open_image
from fixtures.rasters import write_geotiff
from fixtures.runners import LocalRunner

NAMES = ("B02", "B03", "B04", "B08", "B11")  # B11 is a 20 m band


def _bands(folder, seed):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    paths = []
    for name in NAMES:
        pixel, side = (20.0, 16) if name == "B11" else (10.0, 32)
        data = rng.integers(1, 10000, (1, side, side), dtype=np.uint16)
        path = folder / f"S2A_T31UDQ_{name}.tif"
        write_geotiff(path, data, transform=from_origin(500000.0, 4600000.0, pixel, pixel))
        paths.append(path)
    return paths


def test_names_parse_and_pick_files_in_order(tmp_path):
    assert parse_bands("b04,B03,B8A") == ("B04", "B03", "B8A")
    with pytest.raises(ConfigError):
        parse_bands("B04,3")
    paths = _bands(tmp_path / "t1", 0)
    assert [p.stem[-3:] for p in band_files(paths, ["B04", "B11", "B02"])] == ["B04", "B11", "B02"]
    with pytest.raises(InputError, match="no file of band B05"):
        band_files(paths, ["B05"])
    with open_image(paths, bands=("B04", "B11")) as source:
        values, _ = source.read_all()
    assert values.shape == (2, 32, 32)  # B11 resampled onto the 10 m grid
    with rasterio.open(paths[2]) as src:
        np.testing.assert_array_equal(values[0], src.read(1))


def test_a_contract_of_band_names_picks_them_from_all_the_files(tmp_path):
    t1, t2 = _bands(tmp_path / "t1", 1), _bands(tmp_path / "t2", 2)
    runner = LocalRunner(bands=3)
    runner.contract = dataclasses.replace(runner.contract, bands=("B04", "B03", "B02"))
    everything = predict_scene(runner, t1, t2, tmp_path / "all.tif", scale=10000, progress=False)
    ordered = [2, 1, 0]  # B04, B03, B02 given by hand
    by_hand = LocalRunner(bands=3)
    predict_scene(
        by_hand,
        [t1[i] for i in ordered],
        [t2[i] for i in ordered],
        tmp_path / "hand.tif",
        scale=10000,
        progress=False,
    )
    with rasterio.open(everything.output) as a, rasterio.open(tmp_path / "hand.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))
    assert everything.tags["bands"] == "B04,B03,B02"
