import numpy as np
import pyogrio.raw
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin

from dsifn.errors import ConfigError
from dsifn.inference.polygons import vectorize, write_polygons
from dsifn.inference.scene import predict_scene
from fixtures.rasters import ORIGIN, PIXEL, write_geotiff
from fixtures.runners import BandRunner

HIGH, LOW = 250, 10  # uint8 values of changed / unchanged pixels in the stand-in's T2


def _hand_made_mask():
    values = np.full((1, 64, 80), LOW, dtype=np.uint8)
    values[0, 5:15, 5:25] = HIGH  # 10 x 20 px rectangle: 200 px
    values[0, 20:50, 30:60] = HIGH  # 30 x 30 square with a 10 x 10 hole: 800 px
    values[0, 30:40, 40:50] = LOW
    values[0, 55:57, 70:72] = HIGH  # 2 x 2 speck: 4 px
    values[0, 18:60, 2:6] = HIGH  # a bar crossing many strips, with a foot: 168 + 12 px
    values[0, 57:60, 6:10] = HIGH
    return values


@pytest.fixture
def probability_raster(tmp_path):
    # A probability raster as scene inference leaves it: float32, NaN as nodata.
    probability = _hand_made_mask()[0].astype(np.float32) / 255.0
    probability[0, :] = np.nan
    path = tmp_path / "work.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=80,
        height=64,
        count=1,
        dtype="float32",
        crs="EPSG:32633",
        transform=from_origin(*ORIGIN, PIXEL, PIXEL),
        nodata=float("nan"),
    ) as dst:
        dst.write(probability[None])
    return path


def test_regions_cut_by_strips_are_dissolved_back(probability_raster):
    whole, crs = vectorize(probability_raster, threshold=0.5, strip_rows=1000)
    strips, _ = vectorize(probability_raster, threshold=0.5, strip_rows=7)
    assert crs == "EPSG:32633"
    assert len(whole) == len(strips) == 4
    key = lambda r: r.geometry.bounds  # noqa: E731
    for a, b in zip(sorted(whole, key=key), sorted(strips, key=key), strict=True):
        assert a.geometry.geom_type == b.geometry.geom_type == "Polygon"
        assert shapely.equals(a.geometry, b.geometry)
        assert a.pixels == b.pixels
        assert b.geometry.is_valid
    pixel_area = PIXEL * PIXEL
    areas = sorted(r.geometry.area for r in strips)
    assert areas == [4 * pixel_area, 180 * pixel_area, 200 * pixel_area, 800 * pixel_area]
    square = max(strips, key=lambda r: r.geometry.area)
    assert len(square.geometry.interiors) == 1  # the hole survives
    assert square.mean_probability == pytest.approx(HIGH / 255.0, abs=1e-6)
    # Pixel coordinates were mapped to the CRS: the rectangle starts 5 px from the origin.
    rectangle = min((r for r in strips if r.pixels == 200), key=key)
    assert rectangle.geometry.bounds == pytest.approx(
        (
            ORIGIN[0] + 5 * PIXEL,
            ORIGIN[1] - 15 * PIXEL,
            ORIGIN[0] + 25 * PIXEL,
            ORIGIN[1] - 5 * PIXEL,
        )
    )


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_polygon_file_has_crs_fields_and_min_area(probability_raster, tmp_path, suffix):
    out = tmp_path / f"changes{suffix}"
    count = write_polygons(probability_raster, out, threshold=0.5, min_area=1000.0)
    assert count == 3  # the 400 m² speck is dropped
    meta, _, geometry, fields = pyogrio.raw.read(out)
    assert "32633" in meta["crs"]
    assert list(meta["fields"]) == ["area", "mean_probability", "pixels"]
    shapes = shapely.from_wkb(geometry)
    assert all(shapely.is_valid(shapes))
    np.testing.assert_allclose(sorted(fields[0]), [18000.0, 20000.0, 80000.0])
    np.testing.assert_allclose(fields[1], HIGH / 255.0, rtol=1e-6)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_unknown_polygon_format_is_refused(probability_raster, tmp_path):
    with pytest.raises(ConfigError, match="gpkg"):
        write_polygons(probability_raster, tmp_path / "c.shp", threshold=0.5)


def test_predict_scene_writes_polygons_and_quicklook(tmp_path):
    before = write_geotiff(tmp_path / "t1.tif", np.full((1, 64, 80), LOW, np.uint8), nodata=None)
    after = write_geotiff(tmp_path / "t2.tif", _hand_made_mask(), nodata=None)
    result = predict_scene(
        BandRunner(),
        before,
        after,
        tmp_path / "change.tif",
        polygons=tmp_path / "changes.gpkg",
        quicklook=tmp_path / "look.png",
        min_area=1000.0,
        tile_size=32,
        overlap=8,
        progress=False,
    )
    assert result.polygon_count == 3
    from PIL import Image

    with Image.open(tmp_path / "look.png") as look:
        assert look.mode == "RGB" and look.size[1] == 64 and look.size[0] == 3 * 80 + 16
        pixels = np.asarray(look)
    overlay = pixels[:, 2 * 80 + 16 :]
    red, green = int(overlay[10, 10, 0]), int(overlay[10, 10, 1])
    assert red > 200 and red - green > 100  # changed: red
    assert overlay[2, 70, 0] == overlay[2, 70, 1]  # unchanged: grey as the image


def test_error_in_the_quicklook_leaves_no_output_and_no_temporary(tmp_path, monkeypatch):
    import dsifn.inference.quicklook

    before = write_geotiff(tmp_path / "t1.tif", np.full((1, 64, 80), LOW, np.uint8), nodata=None)
    after = write_geotiff(tmp_path / "t2.tif", _hand_made_mask(), nodata=None)
    out = tmp_path / "out"

    def broken(*args, **kwargs):
        raise KeyboardInterrupt  # an interrupt while the quicklook is written

    monkeypatch.setattr(dsifn.inference.quicklook, "write_quicklook", broken)
    with pytest.raises(KeyboardInterrupt):
        predict_scene(
            BandRunner(),
            before,
            after,
            out / "change.tif",
            polygons=out / "vectors" / "changes.gpkg",
            quicklook=out / "look.png",
            tile_size=32,
            overlap=8,
            progress=False,
        )
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if not p.is_dir())
    assert left == []
    assert sorted(p.name for p in out.rglob(".*")) == []


def test_no_change_gives_an_empty_but_valid_layer(probability_raster, tmp_path):
    out = tmp_path / "none.gpkg"
    assert write_polygons(probability_raster, out, threshold=0.999) == 0
    meta, _, geometry, _ = pyogrio.raw.read(out)
    assert len(geometry) == 0 and "32633" in meta["crs"]


def test_a_failed_overwrite_leaves_map_polygons_and_quicklook_byte_for_byte(tmp_path, monkeypatch):
    import hashlib

    import dsifn.inference.quicklook

    before = write_geotiff(tmp_path / "t1.tif", np.full((1, 64, 80), LOW, np.uint8), nodata=None)
    after = write_geotiff(tmp_path / "t2.tif", _hand_made_mask(), nodata=None)
    out = tmp_path / "out"
    outputs = {
        "polygons": out / "vectors" / "changes.gpkg",
        "quicklook": out / "look.png",
    }
    options = {"tile_size": 32, "overlap": 8, "progress": False, **outputs}
    predict_scene(BandRunner(), before, after, out / "change.tif", **options)
    files = [out / "change.tif", *outputs.values()]
    hashes = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")  # the last output fails to be written

    monkeypatch.setattr(dsifn.inference.quicklook, "write_quicklook", broken)
    with pytest.raises(OSError, match="No space left"):
        predict_scene(BandRunner(), before, after, out / "change.tif", overwrite=True, **options)
    assert [hashlib.sha256(f.read_bytes()).hexdigest() for f in files] == hashes
    assert sorted(p.name for p in out.rglob(".*")) == []  # no staging left behind
