"""Digital numbers to reflectance: the same ground gives the same input, 2017 or 2023."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from dsifn.cli.options import date_offsets
from dsifn.contract import InputContract
from dsifn.errors import InputError
from dsifn.inference.scene import predict_scene
from dsifn.io.images import band_files, open_image
from dsifn.io.pairs import PixelReading, open_pair
from dsifn.io.radiometry import Conversion, from_scale_offset, product_hint
from dsifn.testing import StandInRunner
from fixtures.sentinel2 import reflectance, write_bands, write_safe

BANDS = ("B04", "B03", "B02")
OLD, NEW = "T31UDQ_20170601T105441", "T31UDQ_20230601T105441"


def _runner(radiometry: str = "reflectance") -> StandInRunner:
    runner = StandInRunner(3, "conv")
    runner.contract = runner.contract.replace(bands=BANDS, radiometry=radiometry)
    return runner


def _map(runner, before, after, out, **options):
    predict_scene(runner, before, after, out, progress=False, **options)
    with rasterio.open(out) as src:
        return src.read(1), src.tags()


@pytest.fixture(scope="module")
def ground(tmp_path_factory):
    """The same reflectance at two dates, stored the 2017 way and the 2023 ways."""
    root = tmp_path_factory.mktemp("ground")
    dates = {"t1": reflectance(1), "t2": reflectance(2)}
    written = {}
    for date, values in dates.items():
        written[f"old_{date}"] = write_bands(root / f"old_{date}", values, BANDS, stem=OLD)
        written[f"tagged_{date}"] = write_bands(
            root / f"tagged_{date}", values, BANDS, stem=NEW, offset=1000, tags=(1e-4, -0.1)
        )
        written[f"bare_{date}"] = write_bands(
            root / f"bare_{date}", values, BANDS, stem=NEW, offset=1000
        )
        written[f"safe_{date}"] = [write_safe(root / f"safe_{date}", values, BANDS)]
    return written


def test_a_2017_file_and_a_2023_file_of_the_same_ground_give_the_same_map(ground, tmp_path):
    runner = _runner()
    old, tags = _map(runner, ground["old_t1"], ground["old_t2"], tmp_path / "old.tif")
    tagged, new_tags = _map(runner, ground["tagged_t1"], ground["tagged_t2"], tmp_path / "n.tif")
    np.testing.assert_allclose(tagged, old, atol=1e-6)
    assert "(DN - 1000) x 0.0001 (file tags)" in new_tags["radiometry"]
    assert "none stated: Sentinel-2's DN / 10000" in tags["radiometry"]
    # Mixed: a 2017 date before a 2023 one, and a SAFE product read from its metadata XML.
    mixed, _ = _map(runner, ground["old_t1"], ground["tagged_t2"], tmp_path / "mixed.tif")
    safe, safe_tags = _map(runner, ground["safe_t1"], ground["safe_t2"], tmp_path / "safe.tif")
    np.testing.assert_allclose(mixed, old, atol=1e-6)
    np.testing.assert_allclose(safe, old, atol=1e-6)
    assert "(MTD_MSIL2A.xml)" in safe_tags["radiometry"]


def test_a_2023_file_that_states_nothing_is_warned_about_and_the_offset_fixes_it(
    ground, tmp_path, capsys
):
    runner = _runner()
    old, _ = _map(runner, ground["old_t1"], ground["old_t2"], tmp_path / "old.tif")
    capsys.readouterr()
    bare, _ = _map(runner, ground["bare_t1"], ground["bare_t2"], tmp_path / "bare.tif")
    warned = [line for line in capsys.readouterr().err.splitlines() if "baseline 04.00" in line]
    assert len(warned) == 2  # one line per date
    assert "sensed 2023-06-01" in warned[0] and "--offset -1000" in warned[0]
    assert np.abs(bare - old).max() > 1e-3  # every reflectance 0.1 too high
    fixed, tags = _map(
        runner, ground["bare_t1"], ground["bare_t2"], tmp_path / "fixed.tif", offset=-1000
    )
    np.testing.assert_allclose(fixed, old, atol=1e-6)
    assert "offset -1000 as asked" in tags["radiometry"]
    assert "baseline 04.00" not in capsys.readouterr().err
    # A 2017 date before a bare 2023 one: the offset for T2 alone (T1 keeps its own).
    mixed, _ = _map(
        runner, ground["old_t1"], ground["bare_t2"], tmp_path / "mix.tif", offset=(None, -1000)
    )
    np.testing.assert_allclose(mixed, old, atol=1e-6)
    assert "--offset ,-1000 for T2 alone" in warned[1]
    assert date_offsets(",-1000") == (None, -1000.0) and date_offsets("-1000") == -1000.0


def test_a_contract_of_digital_numbers_reads_as_before_and_names_the_offset(
    ground, tmp_path, capsys
):
    runner = _runner("dn")  # every model trained before radiometry existed
    old, tags = _map(runner, ground["old_t1"], ground["old_t2"], tmp_path / "o.tif", scale=1e4)
    assert tags["radiometry"] == "digital numbers as stored"
    capsys.readouterr()
    tagged, _ = _map(
        runner, ground["tagged_t1"], ground["tagged_t2"], tmp_path / "t.tif", scale=1e4
    )
    err = capsys.readouterr().err
    assert "states an offset of its digital numbers (file tags: -1000)" in err
    assert np.abs(tagged - old).max() > 1e-3  # as stored: the offset is not applied
    shifted, _ = _map(
        runner,
        ground["tagged_t1"],
        ground["tagged_t2"],
        tmp_path / "s.tif",
        scale=1e4,
        offset=-1000,
    )
    np.testing.assert_allclose(shifted, old, atol=1e-6)


def test_contracts_record_the_unit_and_older_ones_read_digital_numbers():
    contract = _runner().contract
    assert InputContract.from_dict(contract.to_dict()).radiometry == "reflectance"
    legacy = {k: v for k, v in contract.to_dict().items() if k != "radiometry"}
    assert InputContract.from_dict(legacy).radiometry == "dn"
    assert contract.reading().radiometry == "reflectance"
    assert "reflectance" in contract.describe()


def test_a_safe_product_gives_each_band_at_its_finest_resolution_with_its_offset(ground):
    safe = ground["safe_t1"][0]
    with open_image(safe, bands=("B8A", "B02", "nir", "B01")) as source:
        assert [p.name for p in source.paths] == [
            "T31UDQ_20230601T105619_B8A_20m.jp2",
            "T31UDQ_20230601T105619_B02_10m.jp2",
            "T31UDQ_20230601T105619_B08_10m.jp2",
            "T31UDQ_20230601T105619_B01_60m.jp2",
        ]
        assert source.grid.width == 48  # the 10 m grid
        stated = source.stated_conversions()
    assert {(c.scale, c.dn_offset) for c in stated if c} == {(1e-4, -1000.0)}
    with pytest.raises(InputError, match="no file of band B10 among"):
        open_image(safe, bands=("B10",))  # L2A has no cirrus band
    old = write_safe(safe.parent.parent / "l1c", reflectance(3), BANDS, level="L1C",
                     sensed="20170601", baseline="02.04")  # fmt: skip
    with open_image(old, bands=("B04",)) as source:
        (stated,) = source.stated_conversions()
    assert stated == Conversion(1e-4, 0.0, "MTD_MSIL1C.xml")


def test_a_band_name_matching_two_files_or_none_is_refused_naming_the_files(tmp_path):
    paths = [tmp_path / "a_B04.tif", tmp_path / "b_B04.tif", tmp_path / "c_B03.tif"]
    with pytest.raises(InputError, match=r"T1: band B04 matches 2 files: a_B04.tif, b_B04.tif"):
        band_files(paths, ["B4"], "T1")
    with pytest.raises(InputError, match=r"no file of band B02 among a_B04.tif, b_B04.tif"):
        band_files(paths, ["blue"], "T1")


def test_what_files_state_and_what_names_hint():
    assert from_scale_offset(1.0, 0.0, "tags") is None  # GDAL's default: nothing stated
    assert from_scale_offset(1e-4, -0.1, "tags") == Conversion(1e-4, -1000.0, "tags")
    assert product_hint(["S2B_MSIL2A_20230601T105619_N0509_R094_T31UDQ.SAFE/x.jp2"]) == (
        "processing baseline 05.09"
    )
    assert product_hint(["/data/T31UDQ_20230601T105441_B04_10m.jp2"]) == "sensed 2023-06-01"
    assert product_hint(["T31UDQ_20171107T105229_B04.tif", "B04.tif"]) is None
    reading = PixelReading(radiometry="reflectance")
    assert reading.offset is None and reading.known is None


def test_float_files_are_taken_as_reflectance(tmp_path):
    values = reflectance(4, bands=1).astype(np.float32)
    from fixtures.sentinel2 import write_band

    path = write_band(tmp_path / "t_B04.tif", values[0])
    with open_pair(path, path, PixelReading(radiometry="reflectance")) as pair:
        data = pair.read()
    np.testing.assert_allclose(data.values[0, 0], values[0], rtol=1e-6)
    assert "floating-point values taken as reflectance" in pair.radiometry
