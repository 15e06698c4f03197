import json
import sys

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import build_parser, main
from dsifn.inference.loading import load_runner
from dsifn.inference.runner import TorchRunner
from fixtures.rasters import CRS, uint16_scene, write_geotiff


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "dsifn.pt"
    save_checkpoint(path, DSIFN(encoder_weights=None), meta={"threshold": 0.3})
    return path


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    t1 = uint16_scene(11, 80, 96)
    t2 = uint16_scene(12, 80, 96)
    t1[:, :4, :6] = 0
    return write_geotiff(folder / "t1.tif", t1), write_geotiff(folder / "t2.tif", t2)


def _error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    return err[0]


def test_predict_real_dsifn_keeps_georeferencing(checkpoint, pair, tmp_path, capsys):
    out = tmp_path / "change.tif"
    argv = ["predict", "--checkpoint", str(checkpoint), "--before", str(pair[0])]
    argv += ["--after", str(pair[1]), "--out", str(out), "--mode", "both", "--quiet"]
    assert main([*argv, "--device", "cpu", "--precision", "fp32"]) == 0
    assert "wrote" in capsys.readouterr().out
    with rasterio.open(out) as got, rasterio.open(pair[0]) as ref:
        assert got.crs == CRS and got.transform == ref.transform and got.shape == ref.shape
        assert got.tags()["threshold"] == "0.3"  # recorded with the checkpoint
        assert got.tags()["checkpoint"] == str(checkpoint)
        probability, mask = got.read()
    assert (probability[:4, :6] == -1).all() and (mask[:4, :6] == -1).all()
    valid = probability >= 0
    assert valid.sum() == 80 * 96 - 24
    np.testing.assert_array_equal(mask[valid], (probability[valid] >= 0.3).astype(np.float32))
    # The same command again refuses to overwrite, in one line, exit 2.
    assert main(argv) == 2
    assert "--overwrite" in _error_line(capsys)


def test_scene_attention_from_the_command_line(checkpoint, pair, tmp_path):
    # 80 x 96 fits one tile and one window: both ways give the network on the whole scene.
    argv = ["predict", "--checkpoint", str(checkpoint), "--before", str(pair[0]), "--after"]
    argv += [str(pair[1]), "--quiet", "--device", "cpu", "--precision", "fp32"]
    assert main([*argv, "--out", str(tmp_path / "tile.tif")]) == 0
    assert main([*argv, "--out", str(tmp_path / "scene.tif"), "--attention", "scene"]) == 0
    with rasterio.open(tmp_path / "tile.tif") as tile, rasterio.open(tmp_path / "scene.tif") as sc:
        assert sc.tags()["attention"] == "scene" and tile.tags()["attention"] == "tile"
        np.testing.assert_allclose(sc.read(1), tile.read(1), atol=1e-5)
        assert (sc.read(1)[:4, :6] == -1).all()


def test_torch_runner_returns_probabilities_of_the_network(checkpoint):
    runner = load_runner(checkpoint, device="cpu", precision="fp32")
    assert isinstance(runner, TorchRunner)
    assert runner.threshold == 0.3 and runner.tile_size is None and runner.in_channels == 3
    t1 = np.random.default_rng(0).standard_normal((2, 3, 16, 32)).astype(np.float32)
    t2 = np.random.default_rng(1).standard_normal((2, 3, 16, 32)).astype(np.float32)
    got = runner(t1, t2)
    assert got.shape == (2, 1, 16, 32) and got.dtype == np.float32
    with torch.no_grad():
        logits = runner.model(torch.from_numpy(t1), torch.from_numpy(t2)).stride1
    np.testing.assert_allclose(got, torch.sigmoid(logits).numpy(), atol=1e-6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bands", "1,2"], "band"),
        (["--bands", "x"], "1-based band numbers"),
        (["--stretch", "5"], "LOW,HIGH"),
        (["--tile-size", "8"], "tile size"),
        (["--threshold", "2"], "threshold"),
        (["--polygons", "c.shp"], "gpkg"),
        (["--attention", "scene", "--overlap", "64"], "overlap"),
        (["--attention", "scene", "--tile-size", "512"], "at least 592"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(checkpoint, pair, tmp_path, capsys, extra, message):
    argv = ["predict", "--checkpoint", str(checkpoint), "--before", str(pair[0])]
    argv += ["--after", str(pair[1]), "--out", str(tmp_path / "o.tif"), "--quiet", *extra]
    assert main(argv) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "o.tif").exists()


def test_missing_input_and_misaligned_input_exit_2(checkpoint, pair, tmp_path, capsys):
    base = ["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o.tif")]
    assert main([*base, "--before", str(tmp_path / "nope.tif"), "--after", str(pair[1])]) == 2
    assert "does not exist" in _error_line(capsys)
    small = write_geotiff(tmp_path / "small.tif", uint16_scene(3, 40, 96))
    assert main([*base, "--before", str(pair[0]), "--after", str(small)]) == 2
    assert "--align" in _error_line(capsys)
    assert (
        main(
            [*base, "--checkpoint", str(pair[0]), "--before", str(pair[0]), "--after", str(pair[1])]
        )
        == 2
    )
    assert "checkpoint" in _error_line(capsys)


@pytest.mark.parametrize("runtime", ["onnxruntime", "auto"])
def test_onnx_model_without_onnxruntime_names_the_extra(
    pair, tmp_path, capsys, monkeypatch, runtime
):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"not onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` fails
    argv = ["predict", "--checkpoint", str(model), "--runtime", runtime]
    argv += ["--before", str(pair[0]), "--after", str(pair[1]), "--out", str(tmp_path / "o.tif")]
    assert main(argv) == 2
    assert "pip install 'dsifn[onnx]'" in _error_line(capsys)
    assert not (tmp_path / "o.tif").exists()


def test_folders_are_paired_by_name(checkpoint, tmp_path, capsys):
    before, after, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    before.mkdir(), after.mkdir()
    rng = np.random.default_rng(0)
    for folder, names in ((before, ["x.png", "only1.png"]), (after, ["x.png", "only2.png"])):
        for name in names:
            Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(folder / name)
    argv = ["predict", "--checkpoint", str(checkpoint), "--before-dir", str(before)]
    argv += ["--after-dir", str(after), "--out-dir", str(out), "--quiet", "--mode", "mask"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "only1.png" in captured.err and "only2.png" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["x.png"]
    with Image.open(out / "x.png") as image:
        assert image.size == (40, 32)
        assert set(np.unique(np.asarray(image))) <= {0, 255}


def test_keras_variant_refuses_another_tile_size(tmp_path, pair, capsys):
    path = tmp_path / "keras.pt"
    save_checkpoint(path, DSIFN(encoder_weights=None, variant="keras", input_size=32))
    argv = ["predict", "--checkpoint", str(path), "--before", str(pair[0]), "--after"]
    argv += [str(pair[1]), "--out", str(tmp_path / "o.tif"), "--tile-size", "64"]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "32x32 tiles only" in line and "--tile-size 64 is not possible" in line


def test_library_errors_are_told_with_the_commands_flags(checkpoint, pair, tmp_path, capsys):
    # The library names its parameters (bands=(4, 3, 2), mode="mask"); the CLI says the flags.
    four = write_geotiff(tmp_path / "four.tif", uint16_scene(4, 80, 96, bands=4))
    pngs = []
    for name in ("t1.png", "t2.png"):
        Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(tmp_path / name)
        pngs.append(str(tmp_path / name))
    cases = [
        ([str(four)], [str(four)], "o.tif", [], "e.g. --bands 4,3,2"),
        (pngs[:1], pngs[1:], "o.png", ["--mode", "both"], "use --mode probability or --mode mask"),
        (
            [str(pair[0])],
            [str(pair[1])],
            "o.tif",
            ["--attention", "scene", "--overlap", "8"],
            "cannot be set (--overlap 8)",
        ),
    ]
    for before, after, out, extra, message in cases:
        argv = ["predict", "--checkpoint", str(checkpoint), "--before", *before, "--after"]
        argv += [*after, "--out", str(tmp_path / out), "--quiet", *extra]
        assert main(argv) == 2
        line = _error_line(capsys)
        assert message in line and "=" not in line, line
        assert not (tmp_path / out).exists()


def test_one_pair_is_refused_under_torchrun(checkpoint, pair, tmp_path, capsys, monkeypatch):
    # Every process would write the same map: torchrun shares folders of pairs only.
    monkeypatch.setenv("WORLD_SIZE", "2")
    argv = ["predict", "--checkpoint", str(checkpoint), "--before", str(pair[0])]
    argv += ["--after", str(pair[1]), "--out", str(tmp_path / "o.tif"), "--quiet"]
    assert main(argv) == 2
    assert "--before-dir" in _error_line(capsys)
    assert not (tmp_path / "o.tif").exists()


def test_progress_json_gives_json_lines_and_quiet_gives_none(checkpoint, pair, tmp_path, capsys):
    argv = ["predict", "--checkpoint", str(checkpoint), "--before", str(pair[0]), "--after"]
    argv += [str(pair[1]), "--device", "cpu", "--precision", "fp32", "--tile-size", "32"]
    assert main([*argv, "--out", str(tmp_path / "a.tif"), "--progress", "json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines[0]["progress"] == 0.0 and lines[-1]["progress"] == 1.0
    assert {line["desc"] for line in lines} == {"dsifn predict"} and lines[0]["unit"] == "tile"
    assert [line["done"] for line in lines] == list(range(lines[-1]["total"] + 1))
    assert main([*argv, "--out", str(tmp_path / "b.tif"), "--progress", "json", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_every_command_takes_progress():
    commands = build_parser()._subparsers._group_actions[0].choices
    for name, parser in commands.items():
        option = parser._option_string_actions.get("--progress")
        assert option is not None and option.choices == ("auto", "json", "none"), name
