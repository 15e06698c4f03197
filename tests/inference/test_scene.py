import numpy as np
import pytest
import rasterio
import torch
from PIL import Image
from rasterio.transform import from_origin

from dsifn.errors import ConfigError, DataError, InputError, OutputExistsError
from dsifn.inference.scene import FLOAT_NODATA, UINT8_NODATA, predict_scene
from fixtures.rasters import CRS, ORIGIN, PIXEL, uint16_scene, write_geotiff
from fixtures.runners import BandRunner, LocalRunner

HEIGHT, WIDTH = 771, 1037  # odd sizes: tiles never fit exactly
FAST = {"tile_size": 128, "overlap": 32, "batch_size": 4, "progress": False}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scene")
    t1 = uint16_scene(1, HEIGHT, WIDTH)
    t2 = uint16_scene(2, HEIGHT, WIDTH)
    t1[:, 10:30, 40:90] = 0  # nodata on T1
    t2[1, 700:720, 1000:1030] = 0  # nodata on one band of T2
    return {
        "t1": write_geotiff(folder / "t1.tif", t1),
        "t2": write_geotiff(folder / "t2.tif", t2),
        "data": (t1, t2),
    }


def _whole_image(runner, t1, t2, divisor):
    # The stand-in applied to the whole scene at once, with the same scaling and the one
    # nodata rule: where either date has no data, both are 0.
    valid = np.all(t1 > 0, axis=0) & np.all(t2 > 0, axis=0)

    def prepare(x):
        scaled = np.clip(x.astype(np.float32) / divisor, 0, 1)
        scaled[:, ~valid] = 0
        return runner.contract.normalization(torch.from_numpy(scaled)).numpy()[None]

    out = runner(prepare(t1), prepare(t2))[0, 0]
    return np.where(valid, out, FLOAT_NODATA)


def test_georeferenced_tiled_output_equals_whole_image_with_nodata(scene, tmp_path):
    runner = LocalRunner()
    out = tmp_path / "change.tif"
    result = predict_scene(runner, scene["t1"], scene["t2"], out, scale=10000, **FAST)
    assert result.tiles == 8 * 11  # ceil((771-128)/96)+1 rows, ceil((1037-128)/96)+1 columns
    with rasterio.open(out) as got, rasterio.open(scene["t1"]) as ref:
        assert got.crs == ref.crs
        assert got.transform == ref.transform
        assert (got.width, got.height) == (ref.width, ref.height)
        assert got.dtypes == ("float32",)
        assert got.nodata == FLOAT_NODATA
        assert got.compression is not None and got.profile["tiled"]
        tags = got.tags()
        values = got.read(1)
        masks = got.read_masks(1)
    for key in ("model", "bands", "scaling", "threshold", "tile_size", "overlap", "dsifn_version"):
        assert key in tags
    assert tags["scaling"] == "divide by 10000" and tags["tile_size"] == "128"
    expected = _whole_image(runner, *scene["data"], 10000)
    np.testing.assert_allclose(values, expected, atol=1e-4)
    # Nodata from either date (and from one band only) is nodata in the output.
    assert (values[10:30, 40:90] == FLOAT_NODATA).all()
    assert (values[700:720, 1000:1030] == FLOAT_NODATA).all()
    assert (masks[10:30, 40:90] == 0).all() and masks[400, 500] == 255
    assert ((values >= 0) & (values <= 1) | (values == FLOAT_NODATA)).all()


def test_misaligned_inputs_are_refused_then_aligned(scene, tmp_path):
    t2 = scene["data"][1]
    shifted = from_origin(ORIGIN[0] + 3 * PIXEL, ORIGIN[1], PIXEL, PIXEL)
    moved = write_geotiff(tmp_path / "moved.tif", t2, transform=shifted)
    runner = LocalRunner()
    with pytest.raises(DataError, match=r"extent.*align=True"):
        predict_scene(runner, scene["t1"], moved, tmp_path / "a.tif", scale=10000, **FAST)
    other_crs = write_geotiff(tmp_path / "crs.tif", t2, crs="EPSG:32634")
    with pytest.raises(DataError, match="CRS"):
        predict_scene(runner, scene["t1"], other_crs, tmp_path / "a.tif", scale=10000, **FAST)
    coarse = write_geotiff(
        tmp_path / "coarse.tif",
        t2[:, ::2, ::2].copy(),
        transform=from_origin(*ORIGIN, 2 * PIXEL, 2 * PIXEL),
    )
    with pytest.raises(DataError, match="resolution"):
        predict_scene(runner, scene["t1"], coarse, tmp_path / "a.tif", scale=10000, **FAST)
    assert runner.calls == 0 and not (tmp_path / "a.tif").exists()

    out = tmp_path / "aligned.tif"
    predict_scene(runner, scene["t1"], moved, out, scale=10000, align=True, **FAST)
    with rasterio.open(out) as got:
        assert got.transform == from_origin(*ORIGIN, PIXEL, PIXEL)
        values = got.read(1)
    # T2 starts 3 pixels east of T1: T1's first 3 columns have no T2 data.
    assert (values[:, :3] == FLOAT_NODATA).all()
    assert (values[100:200, 10:] >= 0).all()


def _shifted_pair(tmp_path):
    # Files with no nodata of their own: warping fills what T2 does not cover with zeros,
    # which must not be predicted against as if they were data.
    t1 = write_geotiff(tmp_path / "t1.tif", uint16_scene(1, 160, 200), nodata=None)
    shifted = from_origin(ORIGIN[0] + 5 * PIXEL, ORIGIN[1] - 4 * PIXEL, PIXEL, PIXEL)
    t2 = write_geotiff(
        tmp_path / "t2.tif", uint16_scene(2, 160, 200), transform=shifted, nodata=None
    )
    return t1, t2  # T2 starts 5 columns east and 4 rows south of T1's origin


def test_aligned_t2_leaves_uncovered_pixels_nodata(tmp_path):
    t1, t2 = _shifted_pair(tmp_path)
    out = tmp_path / "aligned.tif"
    predict_scene(LocalRunner(), t1, t2, out, scale=10000, align=True, **FAST)
    with rasterio.open(out) as got:
        values = got.read(1)
    assert (values[:, :5] == FLOAT_NODATA).all()
    assert (values[:4, :] == FLOAT_NODATA).all()
    covered = values[4:, 5:]
    assert ((covered >= 0) & (covered <= 1)).all()


def test_aligned_coverage_holds_with_a_nodata_value(tmp_path):
    from dsifn.io.images import RasterSource

    t1, t2 = _shifted_pair(tmp_path)
    with RasterSource([t1]) as first:
        grid = first.grid
    source = RasterSource([t2], grid=grid, nodata=10000, name="T2")
    try:
        assert source.count == 3  # the coverage band is not a data band
        mask = source.read(0, 0, 160, 200).valid
        assert not mask[:, :5].any() and not mask[:4, :].any()
        assert mask[4:, 5:].all()
        _, decimated = source.read_decimated(100)
        assert not decimated[:, 0].any() and decimated[-1, -1]
    finally:
        source.close()


def test_band_count_must_fit_the_model(scene, tmp_path):
    with pytest.raises(InputError, match="`bands='4,3,2'`"):
        predict_scene(LocalRunner(bands=4), scene["t1"], scene["t2"], tmp_path / "o.tif", **FAST)


def test_band_selection_and_percentile_stretch_are_recorded(tmp_path):
    data = uint16_scene(5, 60, 70, bands=4)
    t1 = write_geotiff(tmp_path / "t1.tif", data)
    t2 = write_geotiff(tmp_path / "t2.tif", data[::-1].copy())
    out = tmp_path / "o.tif"
    predict_scene(LocalRunner(), t1, t2, out, bands=(4, 3, 2), stretch=(1.0, 99.0), **FAST)
    with rasterio.open(out) as got:
        tags = got.tags()
    assert tags["bands"] == "4,3,2"
    assert tags["scaling"].startswith("percentile stretch 1-99")
    with pytest.raises(InputError, match="out of range"):
        predict_scene(LocalRunner(), t1, t2, tmp_path / "x.tif", bands=(5, 1, 2), **FAST)


def test_uint8_mask_both_bands_and_cog(scene, tmp_path):
    out = tmp_path / "cog.tif"
    predict_scene(
        LocalRunner(),
        scene["t1"],
        scene["t2"],
        out,
        scale=10000,
        mode="both",
        dtype="uint8",
        threshold=0.45,
        cog=True,
        **FAST,
    )
    with rasterio.open(out) as got:
        assert got.driver == "GTiff"
        assert got.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert got.overviews(1)  # COG carries overviews
        assert got.count == 2 and got.dtypes == ("uint8", "uint8")
        assert got.descriptions == ("change_probability", "change_mask")
        probability, mask = got.read()
    assert got.nodata == UINT8_NODATA
    valid = probability != UINT8_NODATA
    assert (mask[~valid] == UINT8_NODATA).all()
    assert set(np.unique(mask[valid])) <= {0, 1}
    # The mask is thresholded before rounding to 1/254 steps: compare away from the threshold.
    level = probability[valid].astype(float)
    assert (mask[valid][level > 0.45 * 254 + 1] == 1).all()
    assert (mask[valid][level < 0.45 * 254 - 1] == 0).all()
    assert 0 < mask[valid].mean() < 1


def test_existing_outputs_are_refused_before_any_work(scene, tmp_path):
    runner = LocalRunner()
    for name in ("o.tif", "q.png", "p.gpkg"):
        existing = tmp_path / name
        existing.write_bytes(b"keep")
        kwargs = {"quicklook": tmp_path / "q.png"} if name == "q.png" else {}
        if name == "p.gpkg":
            kwargs = {"polygons": existing}
        target = tmp_path / ("o.tif" if name == "o.tif" else "new.tif")
        with pytest.raises(OutputExistsError):
            predict_scene(runner, scene["t1"], scene["t2"], target, **kwargs, **FAST)
        assert existing.read_bytes() == b"keep"
    assert runner.calls == 0


def test_a_crash_mid_run_leaves_no_output(scene, tmp_path):
    runner = LocalRunner()
    runner.fail_after = 3
    out = tmp_path / "change.tif"
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_scene(runner, scene["t1"], scene["t2"], out, scale=10000, **FAST)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial or working files left behind


def test_overwrite_replaces(tmp_path):
    data = uint16_scene(4, 40, 50)
    t1 = write_geotiff(tmp_path / "t1.tif", data)
    out = tmp_path / "o.tif"
    out.write_bytes(b"old")
    predict_scene(LocalRunner(), t1, t1, out, overwrite=True, **FAST)
    with rasterio.open(out) as got:
        assert got.crs == CRS


def test_tta_of_an_equivariant_model_changes_nothing(tmp_path):
    data = (np.random.default_rng(0).random((1, 40, 50)) * 250 + 1).astype(np.uint8)
    t1 = write_geotiff(tmp_path / "t1.tif", data)
    t2 = write_geotiff(tmp_path / "t2.tif", data)
    plain, tta = tmp_path / "plain.tif", tmp_path / "tta.tif"
    predict_scene(BandRunner(), t1, t2, plain, **FAST)
    predict_scene(BandRunner(), t1, t2, tta, tta=True, **FAST)
    with rasterio.open(plain) as a, rasterio.open(tta) as b:
        np.testing.assert_allclose(a.read(1), b.read(1), atol=1e-6)
        np.testing.assert_allclose(a.read(1), data[0] / 255.0, atol=1e-6)


def test_fixed_size_model_refuses_another_tile_size_and_pads_small_scenes(tmp_path):
    data = uint16_scene(3, 40, 50)
    t1 = write_geotiff(tmp_path / "t1.tif", data)
    t2 = write_geotiff(tmp_path / "t2.tif", data)
    runner = LocalRunner(tile_size=64)
    with pytest.raises(ConfigError, match="64x64 tiles only"):
        predict_scene(runner, t1, t2, tmp_path / "o.tif", tile_size=128, progress=False)
    predict_scene(runner, t1, t2, tmp_path / "o.tif", progress=False)
    assert runner.shapes == [(1, 3, 64, 64)]  # one 64-px tile: the 40x50 scene padded
    with rasterio.open(tmp_path / "o.tif") as got:
        assert got.shape == (40, 50)


def test_plain_png_pair_gives_a_png(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    Image.fromarray(b).save(tmp_path / "b.jpg")
    out = tmp_path / "change.png"
    predict_scene(LocalRunner(), tmp_path / "a.png", tmp_path / "b.jpg", out, **FAST)
    with Image.open(out) as image:
        assert image.mode == "L" and image.size == (40, 48)
    with pytest.raises(ConfigError, match="PNG"):
        predict_scene(LocalRunner(), tmp_path / "a.png", tmp_path / "b.jpg", tmp_path / "c.tif")


def test_band_files_at_several_resolutions_are_stacked_on_the_finest_grid(tmp_path):
    fine = uint16_scene(7, 40, 60, bands=1)
    coarse = uint16_scene(8, 20, 30, bands=1)
    coarse_transform = from_origin(*ORIGIN, 2 * PIXEL, 2 * PIXEL)
    files = []
    for date in (1, 2):
        files.append(
            [
                write_geotiff(tmp_path / f"d{date}_b4.tif", fine),
                write_geotiff(tmp_path / f"d{date}_b11.tif", coarse, transform=coarse_transform),
                write_geotiff(tmp_path / f"d{date}_b3.tif", fine),
            ]
        )
    out = tmp_path / "o.tif"
    predict_scene(LocalRunner(), files[0], files[1], out, scale=10000, **FAST)
    with rasterio.open(out) as got:
        assert got.shape == (40, 60)
        assert got.transform == from_origin(*ORIGIN, PIXEL, PIXEL)


@pytest.mark.parametrize("readers", [1, 4])
def test_any_number_of_reader_threads_gives_the_same_map(scene, tmp_path, monkeypatch, readers):
    import dsifn.inference.pipeline as pipeline

    monkeypatch.setattr(pipeline, "READERS", readers)
    out = tmp_path / "change.tif"
    predict_scene(LocalRunner(), scene["t1"], scene["t2"], out, scale=10000, **FAST)
    with rasterio.open(out) as got:
        values = got.read(1)
    expected = _whole_image(LocalRunner(), *scene["data"], 10000)
    np.testing.assert_allclose(values, expected, atol=1e-4)


def test_a_reopened_source_reads_the_same_through_its_own_files(scene):
    from dsifn.io.images import RasterSource

    with RasterSource([scene["t1"]], bands=[3, 1], name="T1") as source:
        clone = source.reopen()
        assert clone is not source and clone.grid == source.grid and clone.count == 2
        for got, expected in zip(clone.read(5, 7, 40, 30), source.read(5, 7, 40, 30), strict=True):
            np.testing.assert_array_equal(got, expected)
        clone.close()
        assert source.read(0, 0, 4, 4).values.shape == (2, 4, 4)  # the original is still open


def test_a_failed_write_stops_the_run_with_its_error(scene):
    from dsifn.inference.pipeline import run_tiles
    from dsifn.inference.tiling import TileGrid
    from dsifn.io.pairs import PixelReading, open_pair
    from dsifn.scaling import ScalingRule

    rows = []

    def write_rows(first, values):
        if rows:
            raise OSError("disk full")
        rows.append(first)

    reading = PixelReading(scaling=ScalingRule.of(10000))
    with open_pair(scene["t1"], scene["t2"], reading) as pair:
        grid = TileGrid.plan(HEIGHT, WIDTH, 128, 32)
        with pytest.raises(OSError, match="disk full"):
            run_tiles(LocalRunner(), pair, grid, write_rows, progress=False)
    assert rows == [0]  # the rows after the failure were not written
