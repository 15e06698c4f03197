"""dsifn:detectchange inside QGIS: what dsifn predict writes, byte for byte; Cancel; errors.

Each test runs QGIS's own Python headless on ``harness.py`` (or ``qgis_process.bin``) and
compares with ``dsifn predict`` run directly on the same paths. Skipped, with the reason,
where QGIS cannot be imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
import torch
from rasterio.transform import from_origin

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import main
from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.qgis.install import write_plugin_zip
from dsifn.scaling import ScalingRule
from fixtures.qgis import (
    PLUGINS,
    dsifn_executable,
    qgis_environment,
    qgis_missing,
    run_harness,
)
from fixtures.rasters import uint16_scene, write_geotiff

pytestmark = pytest.mark.qgis
if qgis_missing() is not None:
    pytest.skip(f"QGIS cannot run here: {qgis_missing()}", allow_module_level=True)

S2_BANDS = ("B02", "B03", "B04", "B08")  # the files given; the model picks B04, B03, B02


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two tiny models (plain, and Sentinel-2 with a contract), a GeoTIFF pair, band files."""
    root = tmp_path_factory.mktemp("qgis")
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None)
    s2_contract = InputContract(
        3,
        model.config.input_normalization,
        bands=("B04", "B03", "B02"),
        scaling=ScalingRule.of(10000),
        tile_size=64,
        threshold=0.4,
    )
    paths = {
        "model": save_checkpoint(root / "model.pt", model, meta={"threshold": 0.3}),
        "s2_model": save_checkpoint(
            root / "s2.pt", model, meta={CONTRACT_KEY: s2_contract.to_dict()}
        ),
        "t1": write_geotiff(root / "t1.tif", uint16_scene(1, 64, 64)),
        "t2": write_geotiff(root / "t2.tif", uint16_scene(2, 64, 64)),
        "root": root,
    }
    for date in (1, 2):
        for i, band in enumerate(S2_BANDS):
            data = uint16_scene(10 * date + i, 64, 64, bands=1)
            write_geotiff(root / f"s2_{date}" / f"T31UDQ_20200101_{band}.tif", data)
    plugins = root / "from_zip"
    with zipfile.ZipFile(write_plugin_zip(root / "plugin.zip")) as archive:
        archive.extractall(plugins)
    paths["zip_plugins"] = plugins
    return paths


def _bands(data, date):
    return [str(data["root"] / f"s2_{date}" / f"T31UDQ_20200101_{band}.tif") for band in S2_BANDS]


def predict_directly(*args):
    """``dsifn predict`` run as a user runs it; returns the finished process."""
    argv = [dsifn_executable(), "predict", *map(str, args), "--device", "cpu"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def direct(data):
    """The change map and polygons of the GeoTIFF pair from dsifn predict itself."""
    out = data["root"] / "direct"
    done = predict_directly(
        "--checkpoint", data["model"], "--before", data["t1"], "--after", data["t2"],
        "--out", out / "change.tif", "--polygons", out / "changes.gpkg",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return out


def _same_polygons(a, b):
    from pyogrio.raw import read

    first, second = read(a), read(b)
    assert list(first[2]) == list(second[2])  # geometries, as WKB
    for x, y in zip(first[3], second[3], strict=True):  # attribute columns
        np.testing.assert_array_equal(x, y)


def test_a_geotiff_pair_gives_what_dsifn_predict_gives(data, direct, tmp_path):
    params = {
        "BEFORE": [str(data["t1"])],
        "AFTER": [str(data["t2"])],
        "MODEL": str(data["model"]),
        "DEVICE": "cpu",
        "OUTPUT": "TEMPORARY_OUTPUT",
        "POLYGONS": "TEMPORARY_OUTPUT",
    }
    spec = {"plugins": str(data["zip_plugins"]), "params": params, "load": True}
    report = run_harness({**spec, "keep": str(tmp_path / "kept")}, tmp_path)
    assert report["error"] is None, report
    kept = report["kept"]  # temporary outputs, copied before QGIS exits and deletes them
    assert Path(kept["OUTPUT"]).read_bytes() == (direct / "change.tif").read_bytes()
    _same_polygons(kept["POLYGONS"], direct / "changes.gpkg")
    assert report["results"]["USED_THRESHOLD"] == 0.3  # the model's own
    assert report["steps"][-1] == 100.0 and report["texts"][0] == "dsifn predict: 0/1 tiles"
    assert report["commands"][0].endswith("--progress json --overwrite")
    loaded = report["loaded"]  # loaded into the project and styled, as from the dialog
    assert loaded["Change map"]["renderer"] == "QgsSingleBandPseudoColorRenderer"
    assert loaded["Changed areas"]["renderer"] == "QgsSingleSymbolRenderer"


def test_sentinel2_band_layers_give_what_dsifn_predict_gives(data, tmp_path):
    layers = [
        {"name": f"{date}_{band}", "uri": path}
        for date in (1, 2)
        for band, path in zip(S2_BANDS, _bands(data, date), strict=True)
    ]
    params = {
        "BEFORE": [f"1_{band}" for band in S2_BANDS],  # project layers, by name
        "AFTER": [f"2_{band}" for band in S2_BANDS],
        "MODEL": str(data["s2_model"]),
        "MODE": 1,  # mask
        "DEVICE": "cpu",
        "OUTPUT": str(tmp_path / "plugin" / "change.tif"),
    }
    spec = {"plugins": PLUGINS, "params": params, "layers": layers, "load": True}
    report = run_harness(spec, tmp_path)
    assert report["error"] is None, report
    out = tmp_path / "direct.tif"
    done = predict_directly(
        "--checkpoint", data["s2_model"], "--before", *_bands(data, 1),
        "--after", *_bands(data, 2), "--out", out, "--mode", "mask",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Path(report["results"]["OUTPUT"]).read_bytes() == out.read_bytes()
    with rasterio.open(out) as change:
        assert change.tags()["bands"] == "B04,B03,B02" and "10000" in change.tags()["scaling"]
    assert report["results"]["USED_THRESHOLD"] == 0.4
    assert report["loaded"]["Change map"]["renderer"] == "QgsPalettedRasterRenderer"


@pytest.mark.skipif(shutil.which("qgis_process.bin") is None, reason="no qgis_process.bin")
def test_qgis_process_runs_the_installed_plugin(data, direct, tmp_path, monkeypatch):
    # Installed by `dsifn qgis install`; QGIS's PATH lacks dsifn: the recorded path is used.
    config = tmp_path / "config"
    monkeypatch.setenv("QGIS_CUSTOM_CONFIG_PATH", str(config))
    assert main(["qgis", "install"]) == 0
    env = qgis_environment(QGIS_CUSTOM_CONFIG_PATH=str(config), PATH="/usr/bin:/bin")
    out = tmp_path / "change.tif"
    # Debian's qgis_process wrapper passes --noversioncheck, which 3.22's program refuses.
    argv = ["qgis_process.bin", "run", "dsifn:detectchange", "--", f"BEFORE={data['t1']}"]
    argv += [f"AFTER={data['t2']}", f"MODEL={data['model']}", "DEVICE=cpu", f"OUTPUT={out}"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert out.read_bytes() == (direct / "change.tif").read_bytes()
    assert "USED_THRESHOLD:\t0.3" in done.stdout


def test_cancel_stops_dsifn_and_leaves_nothing(data, tmp_path):
    big = data["root"] / "big"
    t1 = write_geotiff(big / "t1.tif", uint16_scene(3, 512, 512))
    t2 = write_geotiff(big / "t2.tif", uint16_scene(4, 512, 512))
    out = tmp_path / "out"
    out.mkdir()
    params = {
        "BEFORE": [str(t1)],
        "AFTER": [str(t2)],
        "MODEL": str(data["model"]),
        "DEVICE": "cpu",
        "TILE_SIZE": 64,  # about 80 tiles: Cancel comes long before the end
        "OUTPUT": str(out / "change.tif"),
        "POLYGONS": str(out / "changes.gpkg"),
    }
    # As from the dialog: a background task; Cancel pressed in the main thread.
    spec = {"plugins": PLUGINS, "params": params, "cancel_after": 1, "task": True}
    report = run_harness(spec, tmp_path)
    assert report["canceled"] and report["error"] is None and not report["results"]
    assert report["ran_in_main_thread"] is False
    assert report["ticks"] >= 20  # the main thread's timer kept firing: no frozen interface
    assert "Canceled: dsifn stopped and removed its work files." in report["infos"]
    assert "dsifn: terminated" in report["infos"]
    assert sorted(os.listdir(out)) == []  # no map, no polygons, no .dsifn-* work folder


def test_a_bad_model_file_gives_the_commands_line(data, tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    params = {
        "BEFORE": [str(data["t1"])],
        "AFTER": [str(data["t2"])],
        "MODEL": str(bad),
        "DEVICE": "cpu",
        "OUTPUT": str(tmp_path / "plugin.tif"),
    }
    report = run_harness({"plugins": PLUGINS, "params": params}, tmp_path)
    argv = ["predict", "--checkpoint", str(bad), "--before", str(data["t1"])]
    argv += ["--after", str(data["t2"]), "--out", str(tmp_path / "direct.tif")]
    assert main(argv) == 2  # the command line itself, in this process
    line = capsys.readouterr().err.strip()
    assert line.startswith("dsifn predict: error: ") and "checkpoint" in line
    assert report["error"] == line
    assert not (tmp_path / "plugin.tif").exists()


def test_a_missing_dsifn_says_how_to_install_it(data, tmp_path):
    params = {
        "BEFORE": [str(data["t1"])],
        "AFTER": [str(data["t2"])],
        "MODEL": str(data["model"]),
        "OUTPUT": "TEMPORARY_OUTPUT",
    }
    report = run_harness({"plugins": PLUGINS, "params": params}, tmp_path, PATH="/usr/bin:/bin")
    assert report["error"].startswith("dsifn was not found on PATH; install dsifn with pip")
    assert "Processing > Providers > dsifn" in report["error"]


def test_the_executable_setting_wins_and_its_error_line_is_the_message(data, tmp_path):
    fake = tmp_path / "bin" / "my-dsifn"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho "dsifn predict: error: fake dsifn got $#" >&2\nexit 2\n')
    fake.chmod(0o755)
    params = {
        "BEFORE": [str(data["t1"])],
        "AFTER": [str(data["t2"])],
        "MODEL": str(data["model"]),
        "OUTPUT": "TEMPORARY_OUTPUT",
    }
    spec = {"plugins": PLUGINS, "params": params, "settings": {"DSIFN_EXECUTABLE": str(fake)}}
    report = run_harness(spec, tmp_path)  # the real dsifn is on PATH: the setting wins
    assert report["commands"][0].startswith(f"{fake} predict --checkpoint ")
    assert (
        report["error"] == "dsifn predict: error: fake dsifn got 18"
    )  # predict and its 17 arguments


def test_a_web_layer_is_refused_in_one_line(data, tmp_path):
    xyz = "type=xyz&url=http://127.0.0.1:9/%7Bz%7D/%7Bx%7D/%7By%7D.png&zmax=19&zmin=0"
    params = {
        "BEFORE": ["tiles"],
        "AFTER": [str(data["t2"])],
        "MODEL": str(data["model"]),
        "OUTPUT": "TEMPORARY_OUTPUT",
    }
    layers = [{"name": "tiles", "uri": xyz, "provider": "wms"}]
    report = run_harness({"plugins": PLUGINS, "params": params, "layers": layers}, tmp_path)
    assert report["error"] == (
        "layer 'tiles' is a wms layer, not a raster GDAL reads; save it as a GeoTIFF first "
        "(Export > Save As...)"
    )
    assert report["commands"] == []  # refused before dsifn runs


def _gdal_sources(data, kind, folder):
    """The same pair as a VRT, a GeoPackage raster or a /vsizip/ path: (T1, T2, layer URIs)."""
    if kind == "vrt":
        names = [str(folder / f"t{i}.vrt") for i in (1, 2)]
        for source, name in zip((data["t1"], data["t2"]), names, strict=True):
            rasterio.shutil.copy(source, name, driver="VRT")
        return names
    if kind == "gpkg":  # GeoPackage rasters hold bytes: an 8-bit pair, one table per date
        gpkg = folder / "pair.gpkg"
        for i in (1, 2):
            rgb = np.random.default_rng(i).integers(0, 255, (3, 64, 64), dtype=np.uint8)
            profile = {"driver": "GPKG", "width": 64, "height": 64, "count": 3, "dtype": "uint8"}
            profile.update(crs="EPSG:32633", transform=from_origin(500000, 4600000, 10, 10))
            options = {"RASTER_TABLE": f"t{i}", "APPEND_SUBDATASET": "YES" if i == 2 else "NO"}
            with rasterio.open(gpkg, "w", **profile, **options) as dst:
                dst.write(rgb)
        return [f"GPKG:{gpkg}:t{i}" for i in (1, 2)]
    archive = folder / "pair.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for i in (1, 2):
            zipped.write(data[f"t{i}"], f"t{i}.tif")
    return [f"/vsizip/{archive}/t{i}.tif" for i in (1, 2)]


def _same_map(a, b):
    with rasterio.open(a) as first, rasterio.open(b) as second:
        assert (first.crs, first.transform) == (second.crs, second.transform)
        np.testing.assert_array_equal(first.read(), second.read())


@pytest.mark.parametrize("kind", ["vrt", "gpkg", "vsizip"])
def test_layers_gdal_opens_by_name_are_passed_by_that_name(data, direct, tmp_path, kind):
    t1, t2 = _gdal_sources(data, kind, tmp_path)
    layers = [{"name": "before", "uri": t1}, {"name": "after", "uri": t2}]
    params = {
        "BEFORE": ["before"],
        "AFTER": ["after"],
        "MODEL": str(data["model"]),
        "DEVICE": "cpu",
        "OUTPUT": str(tmp_path / "plugin.tif"),
    }
    spec = {"plugins": PLUGINS, "params": params, "layers": layers}
    report = run_harness(spec, tmp_path)
    assert f"--before {t1} --after {t2} " in report["commands"][0]
    assert report["error"] is None, report
    if kind == "gpkg":  # another pair (8-bit): dsifn predict on the same names
        reference = tmp_path / "direct.tif"
        done = predict_directly(
            "--checkpoint", data["model"], "--before", t1, "--after", t2, "--out", reference
        )
        assert done.returncode == 0, done.stderr
    else:  # the GeoTIFF pair itself: the same pixels as from its files
        reference = direct / "change.tif"
    _same_map(tmp_path / "plugin.tif", reference)


def test_the_readmes_console_example_runs_in_qgis(data, tmp_path):
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (code,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "processing" in b]
    for name in ("t1.tif", "t2.tif", "model.pt"):
        shutil.copy(data[name.split(".")[0] if name != "model.pt" else "model"], tmp_path / name)
    spec = {"plugins": PLUGINS, "exec": f"import os\nos.chdir({str(tmp_path)!r})\n{code}"}
    report = run_harness(spec, tmp_path)
    assert report["error"] is None, report
    assert report["results"]["layers"] == 2  # the change map and the polygons, loaded
    assert (tmp_path / "changes.gpkg").is_file()
