"""Band names as users type them and as products write them: one id per band."""

from __future__ import annotations

import pytest

from dsifn.bands import COMMON_NAMES, band_id, band_in_name, parse_bands, resolution_in_name
from dsifn.errors import ConfigError


def test_b4_b04_and_common_names_are_one_band():
    assert parse_bands("B4,b04,red") == ("B04", "B04", "B04")
    assert parse_bands(["B8A", "nir08", "NIR", "swir16", "coastal"]) == (
        "B8A",
        "B8A",
        "B08",
        "B11",
        "B01",
    )
    assert parse_bands("B12,B1") == ("B12", "B01")
    assert sorted(COMMON_NAMES.values()) == sorted(
        ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    )
    assert [band_id(n) for n in ("rededge1", "rededge3", "nir09", "cirrus", "swir22")] == [
        "B05",
        "B07",
        "B09",
        "B10",
        "B12",
    ]
    assert band_id("TCI") is None and band_id("SCL") is None
    with pytest.raises(ConfigError, match="red,green,blue"):
        parse_bands("red,3")


@pytest.mark.parametrize(
    ("name", "band", "metres"),
    [
        ("T31UDQ_20230601T105441_B04_10m.jp2", "B04", 10),  # L2A
        ("T31UDQ_20230601T105441_B8A_20m.jp2", "B8A", 20),
        ("T31UDQ_20230601T105441_B04.jp2", "B04", None),  # L1C
        ("S2A_OPER_MSI_L1C_TL_SGS__20161130T130757_A007527_T31UDQ_B02.tif", "B02", None),
        ("B8A.tif", "B8A", None),  # OSCD's imgs_*_rect
        ("LC08_L2SP_199026_20230601_02_T1_SR_B4.TIF", "B04", None),  # Landsat writes B4
        ("red.tif", "B04", None),
        ("T31UDQ_20230601T105441_TCI_10m.jp2", None, 10),
        ("T31UDQ_20230601T105441_SCL_20m.jp2", None, 20),
    ],
)
def test_the_band_a_file_name_carries(name, band, metres):
    assert band_in_name(name) == band
    assert resolution_in_name(name) == metres
