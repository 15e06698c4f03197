"""STAC items as dates: assets by band id or common name, read in windows over HTTP.

Every URL here is a server the test starts on 127.0.0.1 (:mod:`fixtures.http`); the suite's
guard refuses any other host, to Python and to GDAL alike.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import rasterio
import torch

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import main
from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.errors import ConfigError, DataError, InputError
from dsifn.inference.scene import predict_scene
from dsifn.io.images import open_image, source_names
from dsifn.io.stac import is_item
from dsifn.testing import StandInRunner
from fixtures.http import FileServer
from fixtures.sentinel2 import reflectance, write_band, write_bands, write_item

BANDS = ("B04", "B03", "B02")
ITEM = "items/S2B_31UDQ_20230601_0_L2A"  # an item URL as STAC APIs serve them: no suffix
OLD = ("old_t1", "old_t2")  # the same ground as 2017 files (no offset)


@pytest.fixture(scope="module")
def www(tmp_path_factory):
    """Two dates of 2023 COGs (DN + 1000), their items, and the same ground as of 2017."""
    root = tmp_path_factory.mktemp("www")
    for date, seed in (("t1", 1), ("t2", 2)):
        values = reflectance(seed)
        write_bands(root / date, values, BANDS, stem="S2B", offset=1000, driver="COG")
        write_bands(root / f"old_{date}", values, BANDS, stem="T31UDQ_20170601T105441")
    # A larger COG, to see that a window is read without fetching the file.
    big = np.random.default_rng(0).integers(1000, 11000, (512, 512), dtype=np.uint16)
    write_band(root / "big" / "B04.tif", big, driver="COG")
    return root


@pytest.fixture
def server(www):
    with FileServer(www).running() as served:
        # T1: an item at an API-style URL with asset hrefs relative to it; T2: a local file.
        hrefs = {band: f"../t1/S2B_{band}.tif" for band in BANDS}
        write_item(www / ITEM, hrefs)
        absolute = {band: f"{served.url}/t2/S2B_{band}.tif" for band in BANDS}
        write_item(www / "t2.json", absolute)
        write_item(www / "big.json", {"B04": f"{served.url}/big/B04.tif"})
        yield served


def _runner() -> StandInRunner:
    runner = StandInRunner(3, "conv")
    runner.contract = runner.contract.replace(bands=BANDS, radiometry="reflectance")
    return runner


def test_an_item_url_and_an_item_file_predict_what_the_files_of_2017_do(server, www, tmp_path):
    runner = _runner()
    url = f"{server.url}/{ITEM}"
    stac = predict_scene(runner, url, www / "t2.json", tmp_path / "stac.tif", progress=False)
    t1, t2 = ([www / d / f"T31UDQ_20170601T105441_{b}.tif" for b in BANDS] for d in OLD)
    predict_scene(runner, t1, t2, tmp_path / "old.tif", progress=False)
    with rasterio.open(stac.output) as a, rasterio.open(tmp_path / "old.tif") as b:
        np.testing.assert_allclose(a.read(1), b.read(1), atol=1e-6)
    assert "STAC raster:bands of red" in stac.tags["radiometry"]
    assert stac.tags["before"] == url
    # The COG of each band was read, never its JPEG 2000 twin.
    assert not any(r.endswith(".jp2") for r in server.requests)


def test_assets_are_read_in_windows_not_downloaded(server, www):
    with open_image(www / "big.json", bands=("red",)) as source:
        data = source.read(0, 0, 16, 16)
    size = (www / "big" / "B04.tif").stat().st_size
    assert data.values.shape == (1, 16, 16)
    assert 0 < server.sent["big/B04.tif"] < size / 4


def test_what_is_an_item():
    assert is_item("https://earth-search.aws.element84.com/v1/collections/x/items/S2B_1")
    assert is_item("http://host/item.json") and is_item("item.JSON")
    assert not is_item("https://host/B04.tif?token=1") and not is_item("B04.tif")
    assert source_names(["https://host/items/a"]) == ["https://host/items/a"]
    assert source_names(["https://host/B04.tif"]) == ["/vsicurl/https://host/B04.tif"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None)
    contract = InputContract.of(model).replace(bands=BANDS, radiometry="reflectance")
    path = tmp_path_factory.mktemp("model") / "s2.pt"
    save_checkpoint(path, model, meta={CONTRACT_KEY: contract.to_dict()})
    return path


def _line(capsys):
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("dsifn predict: error:")]
    assert len(errors) == 1 and "Traceback" not in err
    return errors[0]


@pytest.mark.slow
def test_dsifn_predict_takes_items_and_says_what_is_wrong_in_one_line(
    server, www, checkpoint, tmp_path, capsys
):
    argv = ["predict", "--checkpoint", str(checkpoint), "--quiet", "--device", "cpu"]
    url = f"{server.url}/{ITEM}"
    out = tmp_path / "change.tif"
    assert main([*argv, "--before", url, "--after", str(www / "t2.json"), "--out", str(out)]) == 0
    with rasterio.open(out) as src:
        assert src.shape == (48, 48) and src.crs == "EPSG:32631"
    capsys.readouterr()
    missing = [*argv, "--before", url, "--after", url, "--out", str(tmp_path / "m.tif")]
    assert main([*missing, "--bands", "B05,B03,B02"]) == 2
    line = _line(capsys)
    assert "T1: the STAC item" in line and "has no asset of band B05; its assets: red," in line
    gone = f"http://127.0.0.1:{_free_port()}/{ITEM}"
    assert main([*argv, "--before", gone, "--after", url, "--out", str(tmp_path / "g.tif")]) == 2
    assert "T1: cannot read the STAC item" in _line(capsys)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_missing_cog_is_one_error_and_other_hosts_are_never_reached(server, www, tmp_path):
    write_item(tmp_path / "broken.json", {"B04": f"{server.url}/nowhere/B04.tif"})
    with pytest.raises(DataError, match=r"T1 file /vsicurl/http://127.0.0.1:\d+/nowhere/B04"):
        open_image(tmp_path / "broken.json", bands=("B04",), name="T1")
    with pytest.raises(DataError, match="is not a readable raster"):
        open_image("https://192.0.2.1/B04.tif", name="T1")  # GDAL: through the dead proxy
    with pytest.raises(InputError, match=r"cannot read the STAC item .*network"):
        open_image("https://192.0.2.1/items/x", bands=("B04",), name="T1")


def test_without_pystac_an_item_is_one_line_saying_what_to_install(monkeypatch, www):
    monkeypatch.setitem(sys.modules, "pystac", None)
    with pytest.raises(ConfigError, match=r"pip install 'dsifn\[stac\]'"):
        open_image(www / "t2.json", bands=BANDS)
