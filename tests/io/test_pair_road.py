"""One road for pixels: a dataset crop and the scene tile of the same window are the same input.

Each case writes a pair that is hard in one way (no data on one date only, an alpha band, a
GDAL internal mask, NaN pixels, a percentile stretch, 10 and 20 m band files), reads a window
the way training reads a crop (the dataset) and the way ``dsifn predict`` reads a tile (the
scene plan's tile reader), and asks for the same values and the same validity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from dsifn.contract import InputContract
from dsifn.data import ChangeDetectionDataset, reading_config
from dsifn.data.dataset import read_dates
from dsifn.inference.pipeline import read_tile
from dsifn.inference.tiling import TileGrid
from dsifn.io.pairs import open_pair
from dsifn.normalization import Normalization
from dsifn.scaling import ScalingRule
from fixtures.rasters import CRS, write_geotiff

SIZE = 64
WINDOW = (16, 8, 32, 40)  # row, col, height, width: not aligned to anything


def _levir(root: Path, t1: np.ndarray, t2: np.ndarray, **profile) -> tuple[Path, Path]:
    """A one-pair LEVIR-style split of GeoTIFFs (test/{A,B,label}/p.tif)."""
    label = np.zeros((SIZE, SIZE), np.uint8)
    label[20:30, 20:30] = 1
    paths = []
    for sub, data in (("A", t1), ("B", t2)):
        paths.append(write_geotiff(root / "test" / sub / "p.tif", data, **profile))
    write_geotiff(root / "test" / "label" / "p.tif", label, nodata=None)
    return paths[0], paths[1]


def _values(seed: int, bands: int = 3, dtype: str = "uint16") -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(1, 4000, (bands, SIZE, SIZE)).astype(dtype)


def _nodata_on_one_date(root):
    t1, t2 = _values(1), _values(2)
    t2[:, 40:48, :] = 0  # a swath border on T2 only
    return _levir(root, t1, t2, nodata=0), {}


def _alpha_band(root):
    t1 = np.concatenate([_values(1, dtype="uint8"), np.full((1, SIZE, SIZE), 255, np.uint8)])
    t1[3, :, 30:] = 0  # transparent on T1
    t1[3, 10:12, :] = 128  # half transparent: data
    t2 = np.concatenate([_values(2, dtype="uint8"), np.full((1, SIZE, SIZE), 255, np.uint8)])
    return _levir(root, t1, t2, nodata=None, photometric="RGB", alpha="YES"), {}


def _internal_mask(root):
    paths = _levir(root, _values(1), _values(2), nodata=None)
    mask = np.full((SIZE, SIZE), 255, np.uint8)
    mask[:, 30:34] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(paths[0], "r+") as dst:
        dst.write_mask(mask)
    return paths, {}


def _nan_pixels(root):
    t1, t2 = _values(1).astype(np.float32) / 4000, _values(2).astype(np.float32) / 4000
    t1[1, 25, 9:15] = np.nan
    t2[0, 44, 30] = np.inf
    return _levir(root, t1, t2, nodata=None), {}


def _stretch(root):
    t1, t2 = _values(1), _values(2)
    t2[:, :, :4] = 0
    return _levir(root, t1, t2, nodata=0), {"stretch": (2.0, 98.0)}


def _band_files(root):
    # One date as a 10 m band and a 20 m band (resampled onto the 10 m grid), OSCD-like names.
    paths = []
    for date, seed in ((1, 10), (2, 20)):
        folder = root / f"imgs_{date}"
        for band, pixel, side in (("B04", 10.0, SIZE), ("B11", 20.0, SIZE // 2)):
            data = np.random.default_rng(seed + side).integers(1, 4000, (side, side))
            transform = Affine(pixel, 0, 500000.0, 0, -pixel, 4600000.0)
            path = folder / f"T31UDQ_{band}.tif"
            write_geotiff(path, data.astype(np.uint16), crs=CRS, transform=transform)
            paths.append(path)
    return (paths[:2], paths[2:]), {"bands": ("B04", "B11")}


CASES = {
    "nodata on one date": _nodata_on_one_date,
    "alpha band": _alpha_band,
    "internal mask": _internal_mask,
    "NaN and infinity": _nan_pixels,
    "percentile stretch": _stretch,
    "10 and 20 m bands": _band_files,
}


def _contract(bands: int, options: dict) -> InputContract:
    scaling = ScalingRule.of(stretch=options.get("stretch"))
    norm = Normalization((0.5,) * bands, (0.25,) * bands)
    return InputContract(bands, norm, bands=options.get("bands"), scaling=scaling)


@pytest.mark.parametrize("case", list(CASES))
def test_a_dataset_crop_is_the_scene_tile_of_the_same_window(tmp_path, case):
    (before, after), options = CASES[case](tmp_path)
    contract = _contract(2 if "bands" in options else 3, options)
    # The scene: a tile of the pair opened as dsifn predict opens it.
    with open_pair(before, after, contract.reading()) as pair:
        grid = TileGrid.plan(pair.grid.height, pair.grid.width, 32, 8)
        tile = read_tile(pair, grid, WINDOW[0], WINDOW[1])
        row_tile = read_tile(pair, TileGrid.plan(SIZE, SIZE, 40, 0), WINDOW[0], WINDOW[1])
    h, w = 32, min(32, SIZE - WINDOW[1])
    # The dataset: the same window as a training crop reads it, through the model's reading.
    config = reading_config(contract, str(tmp_path))
    assert config.reading() == contract.reading()  # one description of the road
    if "bands" in options:
        from dsifn.data.layouts import Sample

        sample = Sample("city", tuple(before), tuple(after), tmp_path / "unused.tif")
        crop = read_dates(sample, config, (WINDOW[0], WINDOW[1], h, w))
    else:
        dataset = ChangeDetectionDataset(config, "test")
        crop = read_dates(dataset.samples[0], config, (WINDOW[0], WINDOW[1], h, w))
        whole = dataset[0]  # an evaluated image: the whole pair
        np.testing.assert_array_equal(
            whole["image"].numpy()[..., WINDOW[0] : WINDOW[0] + h, WINDOW[1] : WINDOW[1] + w],
            crop.values,
        )
        assert (whole["has_data"][0].numpy()[WINDOW[0] :, WINDOW[1] :][:h, :w] == crop.valid).all()
    np.testing.assert_array_equal(crop.values, tile.values[..., :h, :w])
    np.testing.assert_array_equal(crop.valid, tile.valid[:h, :w])
    np.testing.assert_array_equal(crop.values, row_tile.values[..., :h, :w])
    assert crop.scaling == tile.scaling
    assert not crop.valid.all() or case in ("percentile stretch", "10 and 20 m bands")
    assert (crop.values[:, :, ~crop.valid] == 0).all()  # both dates zeroed where either has none


def test_an_alpha_band_is_validity_not_a_band_as_in_a_png(tmp_path):
    from PIL import Image

    (before, _), _ = _alpha_band(tmp_path)
    with rasterio.open(before) as src:
        rgba = np.moveaxis(src.read(), 0, -1)
    Image.fromarray(rgba).save(tmp_path / "same.png")
    from dsifn.io.images import open_image

    with open_image(before) as tif, open_image(tmp_path / "same.png") as png:
        a, b = tif.read_all(), png.read_all()
    assert tif.count == png.count == 3
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.valid, b.valid)
    assert (~a.valid).sum() == (SIZE - 2) * (SIZE - 30)  # alpha 0 only; alpha 128 is data


def test_a_given_nodata_value_keeps_the_files_own_masks(tmp_path):
    (before, _), _ = _internal_mask(tmp_path)
    from dsifn.io.images import open_image

    with open_image(before, nodata=7) as source:
        valid = source.read_all().valid
    assert not valid[:, 30:34].any() and valid[:, :30].all()  # the internal mask still holds
