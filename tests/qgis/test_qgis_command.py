"""The plugin's command line, without QGIS: arguments dsifn accepts, lines it parses, inputs."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import get_args

import pytest

from dsifn.cli.commands.predict import _line
from dsifn.cli.main import build_parser
from dsifn.devices import Runtime
from dsifn.inference.scene import SceneResult
from dsifn.progress import JsonProgress
from fixtures.qgis import plugin_module

command = plugin_module("command")


def _request(**fields):
    base = {"model": "m.pt", "before": ["a.tif"], "after": ["b.tif"], "out": "c.tif"}
    return command.PredictRequest(**{**base, **fields})


def test_arguments_are_the_ones_dsifn_predict_takes():
    request = _request(
        before=["B04.tif", "B03.tif"],
        after=["/vsizip/x.zip/B04.tif", "GPKG:/d/x.gpkg:t2"],
        mode="mask",
        threshold=0.3,
        polygons="p.gpkg",
        min_area=50.0,
        tile_size=128,
        device="cpu",
        runtime="onnxruntime",
        align=True,
    )
    args = build_parser().parse_args(command.predict_arguments(request))
    assert args.command == "predict" and args.checkpoint == "m.pt"
    assert args.before == ["B04.tif", "B03.tif"]
    assert args.after == ["/vsizip/x.zip/B04.tif", "GPKG:/d/x.gpkg:t2"]
    assert (args.out, args.mode, args.threshold, args.polygons) == ("c.tif", "mask", 0.3, "p.gpkg")
    assert (args.min_area, args.tile_size, args.device, args.runtime) == (
        50.0,
        128,
        "cpu",
        "onnxruntime",
    )
    assert args.align and args.overwrite and args.progress == "json" and not args.quiet


def test_defaults_leave_every_choice_to_dsifn():
    args = build_parser().parse_args(command.predict_arguments(_request()))
    assert args.threshold is None and args.tile_size is None and args.polygons is None
    assert (args.mode, args.device, args.runtime, args.align) == (
        "probability",
        "auto",
        "auto",
        False,
    )


def test_choices_are_dsifn_predicts():
    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    modes = predict._option_string_actions["--mode"].choices
    assert set(command.MODES) <= set(modes)
    assert command.RUNTIMES == get_args(Runtime)


def test_progress_lines_are_read_as_dsifn_writes_them():
    stream = io.StringIO()
    with JsonProgress(8, "dsifn predict", "tile", stream=stream) as bar:
        bar.update(2)
    lines = stream.getvalue().splitlines()
    first, last = command.parse_progress(lines[0]), command.parse_progress(lines[-1])
    assert first == command.Progress(0.0, 0, 8, "tile", "dsifn predict")
    assert last.fraction == 0.25 and last.done == 2
    assert last.text() == "dsifn predict: 2/8 tiles"
    assert command.parse_progress("dsifn: the model records bands B04,B03,B02") is None
    assert command.parse_progress("{not json") is None
    assert command.parse_progress(json.dumps({"other": 1})) is None


def test_the_error_line_is_the_message():
    stderr = [
        json.dumps({"progress": 0.0, "done": 0, "total": 1, "unit": "tile", "desc": ""}),
        "dsifn: note",
        "dsifn predict: error: checkpoint m.pt is not a dsifn checkpoint",
    ]
    assert command.failure_message(2, stderr) == stderr[-1]
    assert command.failure_message(1, ["Traceback ...", "RuntimeError: boom"]) == (
        "dsifn exited with status 1: RuntimeError: boom"
    )
    assert command.failure_message(-9, []) == "dsifn was stopped by signal 9"


def test_a_cancel_says_whether_dsifn_cleaned_up_or_was_killed():
    assert command.cancel_message(143) == "Canceled: dsifn stopped and removed its work files."
    killed = command.cancel_message(-9)
    assert "stopped by signal 9" in killed and "work folder may remain" in killed


def test_the_threshold_used_is_read_from_predicts_line():
    result = SceneResult(
        output=Path("c.tif"), polygons=Path("p.gpkg"), quicklook=None, polygon_count=3,
        tiles=4, threshold=0.35, tags={},
    )  # fmt: skip
    assert command.used_threshold(["something else", _line(result)]) == 0.35
    assert command.used_threshold(["nothing"]) is None


@pytest.mark.parametrize(
    ("provider", "source", "words"),
    [
        ("wms", "type=xyz&url=https://tile.example/{z}/{x}/{y}.png", "is a wms layer"),
        ("virtualraster", "?crs=EPSG:4326&formula=a", "is a virtualraster layer"),
        ("postgresraster", "dbname='x' table=t", "is a postgresraster layer"),
        ("gdal", "/data/t1.tif|option:NUM_THREADS=2", "GDAL options"),
        ("gdal", "/nowhere/t1.tif", "does not exist"),
    ],
)
def test_layers_dsifn_cannot_read_are_refused_in_one_line(provider, source, words):
    with pytest.raises(command.SourceError, match=words) as caught:
        command.gdal_dataset_name(provider, source, "T1")
    assert "\n" not in str(caught.value) and "'T1'" in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "/vsicurl/https://example.com/cog.tif",
        "/vsizip//data/s2.zip/B04.tif",
        "GPKG:/data/scenes.gpkg:t1",
        'NETCDF:"/data/x.nc":band',
    ],
)
def test_gdal_dataset_names_are_passed_as_they_are(source):
    assert command.gdal_dataset_name("gdal", source, "T1", is_file=lambda _: False) == source


def test_plain_files_and_windows_paths_are_files(tmp_path):
    tif = tmp_path / "t1.tif"
    tif.write_bytes(b"")
    assert command.gdal_dataset_name("gdal", str(tif), "T1") == str(tif)
    windows = r"C:\data\t1.tif"
    assert (
        command.gdal_dataset_name("gdal", windows, "T1", is_file=lambda p: p == windows) == windows
    )


def test_outputs_are_checked(tmp_path):
    command.check_outputs("/tmp/c.tif", "/tmp/p.gpkg")
    command.check_outputs("C:\\out\\c.TIF", None)
    for out, polygons, words in [
        ("/tmp/c.vrt", None, "GeoTIFF"),
        ("/tmp/c.tif", "ogr:dbname='/tmp/x.gpkg' table=\"p\" (geom)", "written to a file"),
        ("/tmp/c.tif", "memory:", "written to a file"),
        ("/tmp/c.tif", "/tmp/p.shp", ".gpkg or .geojson"),
    ]:
        with pytest.raises(command.SourceError, match=words):
            command.check_outputs(out, polygons)
    model = tmp_path / "m.pt"
    with pytest.raises(command.SourceError, match="does not exist"):
        command.check_model(str(model))
    (tmp_path / "m.h5").write_bytes(b"")
    with pytest.raises(command.SourceError, match=r"\.pt, \.onnx, \.xml"):
        command.check_model(str(tmp_path / "m.h5"))


def _executable(folder: Path, name: str = "dsifn") -> str:
    path = folder / name
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return str(path)


def test_the_executable_setting_then_the_recorded_one_then_path(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    recorded, on_path = _executable(tmp_path / "a"), _executable(tmp_path / "b")
    path = str(tmp_path / "b")
    assert command.find_executable(recorded, None, path) == recorded  # the setting wins
    assert command.find_executable("", recorded, path) == recorded
    assert command.find_executable("", str(tmp_path / "gone"), path) == on_path
    assert command.find_executable("dsifn", recorded, path) == on_path  # a name: on PATH
    for setting, recorded_path, words in [
        ("", None, "dsifn was not found on PATH"),
        (str(tmp_path / "x" / "dsifn"), None, "is not an executable file"),
        ("dsifn2", None, "dsifn2 was not found"),
    ]:
        with pytest.raises(command.SourceError, match=words) as caught:
            command.find_executable(setting, recorded_path, str(tmp_path))
        assert "dsifn qgis install" in str(caught.value)
        assert "Processing > Providers > dsifn" in str(caught.value)


def test_the_recorded_executable_is_read_from_installed_json(tmp_path):
    assert command.read_recorded(str(tmp_path)) is None
    (tmp_path / "installed.json").write_text('{"dsifn": "/env/bin/dsifn"}')
    assert command.read_recorded(str(tmp_path)) == "/env/bin/dsifn"
    (tmp_path / "installed.json").write_text("[]")
    assert command.read_recorded(str(tmp_path)) is None


def test_the_child_does_not_inherit_qgis_own_python_and_libraries():
    qgis = os.path.join(os.sep, "Applications", "QGIS.app")
    own = os.path.join(os.sep, "home", "me", "src")
    env = {
        "PATH": "/usr/bin",
        "PYTHONHOME": os.path.join(qgis, "Contents", "MacOS"),
        "PYTHONPATH": os.pathsep.join([os.path.join(qgis, "Contents", "Resources", "python"), own]),
        "GDAL_DATA": os.path.join(qgis, "Contents", "Resources", "gdal"),
        "PROJ_LIB": os.path.join(os.sep, "opt", "proj"),
    }
    child = command.child_environment(env, [qgis])
    assert "PYTHONHOME" not in child and "GDAL_DATA" not in child
    assert child["PYTHONPATH"] == own and child["PROJ_LIB"] == env["PROJ_LIB"]
    assert child["PATH"] == "/usr/bin" and child["PYTHONIOENCODING"] == "utf-8"
