"""int8 quantisation: calibration tiles, the accuracy cost, its refusal, and both runtimes' int8."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import rasterio
import torch

from dsifn.cli.main import main
from dsifn.contract import InputContract, is_change
from dsifn.data import ChangeDetectionDataset, reading_config
from dsifn.errors import ConfigError, DataError, InputError, WeightsError
from dsifn.interop.quantize import (
    Calibration,
    QuantizationCost,
    check_cost,
    measure_cost,
    read_calibration,
)
from dsifn.normalization import IMAGENET_RGB
from fixtures.datasets import write_levir
from fixtures.rasters import write_geotiff

CONTRACT = InputContract(band_count=3, normalization=IMAGENET_RGB, threshold=0.4)


def test_calibration_tiles_are_read_through_the_contract(levir):
    tiles = read_calibration(CONTRACT, Calibration(levir, pairs=4))
    assert tiles.split == "val" and len(tiles.inputs) == 4 and len(tiles.held_out) == 1
    # Images smaller than a tile are tiles of their own, one per pair, pairs in a fixed
    # shuffled order; the pair visited last is held out.
    assert [t["name"] for t in tiles.held_out] == ["val_0@0,0"]
    val = ChangeDetectionDataset(reading_config(CONTRACT, str(levir)), "val")
    first = val[3]["image"]  # the first pair visited
    for date, name in enumerate(("t1", "t2")):
        expected = CONTRACT.normalization(first[date][None]).numpy()
        np.testing.assert_array_equal(tiles.inputs[0][name], expected)
    held = tiles.held_out[0]
    assert torch.equal(held["image"][0], val[0]["image"])
    assert torch.equal(held["mask"][0], val[0]["mask"]) and held["valid"].all()
    # 16-pixel tiles: 8 wanted from 6 pairs of 4 tiles take 2 spread tiles of each pair
    # visited; the held-out ones share no pair with the calibrating ones.
    small = read_calibration(CONTRACT, Calibration(levir, pairs=6, held_out=2, tile_size=16))
    assert [t["name"] for t in small.held_out] == ["val_4@0,16", "val_4@16,16"]
    assert small.inputs[0]["t1"].shape == (1, 3, 16, 16) and small.tile_size == 16
    assert len(small.inputs) == 6
    # A split with fewer tiles than asked holds out a quarter (at least one).
    few = read_calibration(CONTRACT, Calibration(levir, split="test", pairs=64))
    assert (few.split, len(few.inputs), len(few.held_out)) == ("test", 2, 1)


def test_calibration_defaults_and_refusals(levir, tmp_path):
    no_val = tmp_path / "no_val"
    shutil.copytree(levir, no_val)
    shutil.rmtree(no_val / "val")
    assert read_calibration(CONTRACT, Calibration(no_val, pairs=1)).split == "train"
    # A fixed-size model: tiles padded to its side, the padding not counted.
    fixed = read_calibration(CONTRACT, Calibration(levir, pairs=1), fixed_size=48)
    assert fixed.held_out[0]["image"].shape[-2:] == (48, 48)
    assert fixed.held_out[0]["valid"].sum() == 32 * 32
    with pytest.raises(ConfigError, match="48x48 tiles only"):
        read_calibration(CONTRACT, Calibration(levir, tile_size=32), fixed_size=48)
    write_levir(tmp_path / "one", size=32, counts=(1, 0, 1))
    with pytest.raises(DataError, match="gives 1 tile"):
        read_calibration(CONTRACT, Calibration(tmp_path / "one", split="train"))
    four = InputContract(band_count=4, normalization=IMAGENET_RGB.for_bands(4))
    with pytest.raises(InputError, match="model takes 4"):
        read_calibration(four, Calibration(levir))
    with pytest.raises(DataError, match="split 'nope' not found"):
        read_calibration(CONTRACT, Calibration(levir, split="nope"))
    for bad in ({"pairs": 0}, {"held_out": 0}, {"tile_size": 8}, {"max_f1_drop": math.nan}):
        with pytest.raises(ConfigError):
            Calibration(levir, **bad)
    with pytest.raises(ConfigError, match="needs calibration data"):
        Calibration.of(None)
    assert Calibration.of(levir) == Calibration(str(levir))


class _Difference:
    """A stand-in runner: change where the dates differ, optionally inverted."""

    def __init__(self, invert: bool = False) -> None:
        self.in_channels, self.tile_size, self.meta = 3, None, {}
        self.normalization, self.contract, self.threshold = IMAGENET_RGB, CONTRACT, 0.4
        self.invert = invert

    def __call__(self, t1, t2):
        p = 1 / (1 + np.exp(-(np.abs(t2 - t1).mean(axis=1, keepdims=True) - 1.0)))
        return (1 - p if self.invert else p).astype(np.float32)


def _f1(tiles, runner, reference=None):
    """F1 in points counted by hand, against the labels or another runner's decisions."""
    tp = fp = fn = 0
    for tile in tiles.held_out:
        image = tile["image"][0]
        probabilities = [
            is_change(r(*(IMAGENET_RGB(image[d][None]).numpy() for d in (0, 1))), 0.4)
            for r in (runner, reference or runner)
        ]
        pred = probabilities[0]
        ref = probabilities[1] if reference else tile["mask"].numpy() > 0
        valid = tile["valid"].numpy()
        tp += (pred & ref & valid).sum()
        fp += (pred & ~ref & valid).sum()
        fn += (~pred & ref & valid).sum()
    return 100 * 2 * tp / (2 * tp + fp + fn)


def test_the_cost_is_measured_by_the_scoring_core_and_refused_past_the_limit(levir):
    tiles = read_calibration(CONTRACT, Calibration(levir, pairs=2, held_out=3, max_f1_drop=1.0))
    same = measure_cost(_Difference(), _Difference(), tiles, "test")
    assert same.f1_fp32 == same.f1_int8 == pytest.approx(_f1(tiles, _Difference()))
    assert same.f1_fp32 > 20 and same.f1_drop == 0 and same.agreement_f1 == 100
    assert same.max_probability_difference == 0 and same.held_out_pairs == 3
    check_cost(same)
    worse = measure_cost(_Difference(invert=True), _Difference(), tiles, "test")
    assert worse.f1_int8 == pytest.approx(_f1(tiles, _Difference(invert=True)))
    expected = _f1(tiles, _Difference(invert=True), reference=_Difference())
    assert worse.agreement_f1 == pytest.approx(expected)
    assert worse.f1_drop > 1 and worse.max_probability_difference > 0.1
    with pytest.raises(WeightsError, match=r"more than the 1 allowed \(`max_f1_drop`\)"):
        check_cost(worse)
    assert QuantizationCost.from_dict(worse.to_dict()) == worse
    assert worse.to_dict()["f1_drop"] == worse.f1_drop
    assert "held-out" in worse.describe() and "drop" in worse.describe()


def _int8_argv(source, out, data, *extra):
    argv = ["export", "--checkpoint", str(source), "-o", str(out), "--int8"]
    return [*argv, "--calibration", str(data), "--calibration-pairs", "4", *extra]


def _scene_probabilities(model, tmp_path, name):
    rng = np.random.default_rng(9)
    t1, t2 = (
        write_geotiff(tmp_path / f"{d}.tif", rng.integers(1, 255, (3, 40, 36), dtype=np.uint8))
        for d in ("t1", "t2")
    )
    out = tmp_path / f"{name}.tif"
    argv = ["predict", "--checkpoint", str(model), "--before", str(t1), "--after", str(t2)]
    assert main([*argv, "--out", str(out), "--quiet", "--device", "cpu", "--overwrite"]) == 0
    with rasterio.open(out) as src:
        return src.read(1), src.tags()["model"]


def test_openvino_int8_records_its_cost_and_runs_everywhere(openvino_file, levir, tmp_path, capsys):
    pytest.importorskip("nncf")
    from dsifn.interop.openvino import OpenVINORunner, read_info

    out = tmp_path / "int8.xml"
    assert main(_int8_argv(openvino_file, out, levir)) == 0
    printed = capsys.readouterr().out
    assert "int8 against fp32 on 1 held-out" in printed and "(int8)" in printed
    info = read_info(out)
    fp32 = read_info(openvino_file)
    assert info["precision"] == "int8" and info["input_contract"] == fp32["input_contract"]
    cost = QuantizationCost.from_dict(info["quantization"])
    assert (cost.method, cost.split, cost.calibration_pairs, cost.held_out_pairs) == (
        "nncf",
        "val",
        4,
        1,
    )
    assert 0 < cost.max_probability_difference < 0.2 and abs(cost.f1_drop) <= 1.0
    # int8 weights: a quarter of the fp32 IR's.
    sizes = [p.with_suffix(".bin").stat().st_size for p in (out, openvino_file)]
    assert sizes[0] < sizes[1] / 3
    runner = OpenVINORunner(out, device="cpu")
    assert runner.threshold == 0.4 and "int8" in runner.describe()
    # dsifn predict takes it by its suffix, and its map stays close to the fp32 one.
    int8_map, model = _scene_probabilities(out, tmp_path, "int8")
    fp32_map, _ = _scene_probabilities(openvino_file, tmp_path, "fp32")
    assert "openvino" in model and "int8" in model
    assert 0 < np.abs(int8_map - fp32_map).max() < 0.2
    # An int8 model is not quantised again.
    assert main(_int8_argv(out, tmp_path / "again.xml", levir)) == 2
    assert "already int8" in capsys.readouterr().err


def test_onnx_int8_records_its_cost(onnx_file, levir, tmp_path, capsys):
    from dsifn.interop.onnx import OnnxRunner, read_info

    out = tmp_path / "int8.onnx"
    assert main(_int8_argv(onnx_file, out, levir, "--calibration-split", "train")) == 0
    assert "int8 against fp32" in capsys.readouterr().out
    info = read_info(out)
    assert info["precision"] == "int8" and info["threshold"] == 0.4
    cost = QuantizationCost.from_dict(info["quantization"])
    assert cost.method == "onnxruntime-qdq" and cost.split == "train"
    # train has 2 pairs: one calibrates, one is held out.
    assert (cost.calibration_pairs, cost.held_out_pairs) == (1, 1)
    assert 0 < cost.max_probability_difference < 0.2
    assert out.stat().st_size < onnx_file.stat().st_size / 3
    runner = OnnxRunner(out, device="cpu")
    rng = np.random.default_rng(2)
    t1, t2 = (rng.normal(size=(1, 3, 32, 32)).astype(np.float32) for _ in "ab")
    gap = np.abs(runner(t1, t2) - OnnxRunner(onnx_file, device="cpu")(t1, t2)).max()
    assert 0 < gap < 0.2 and "int8" in runner.describe()


def test_a_large_f1_drop_is_refused_and_nothing_is_written(
    checkpoint, onnx_file, levir, tmp_path, capsys, monkeypatch
):
    pytest.importorskip("onnxruntime")
    import dsifn.interop.onnx as onnx_module

    def copy_export(module, sample, file, opset, *, fixed):
        # The fixture's export of this same checkpoint, for speed; the rest runs as it is.
        shutil.copyfile(onnx_file, file)
        return "dynamo"

    monkeypatch.setattr(onnx_module, "_export_to", copy_export)
    out = tmp_path / "out" / "int8.onnx"
    out.parent.mkdir()
    out.write_bytes(b"kept")
    # int8 never gains 100 F1 points on fp32: a negative limit forces the refusal.
    argv = _int8_argv(checkpoint[1], out, levir, "--max-f1-drop", "-100", "--no-check")
    assert main([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "F1 points against fp32" in err and "more than the -100 allowed (--max-f1-drop)" in err
    # The existing file is left as it was, and no temporary file or folder remains.
    assert out.read_bytes() == b"kept" and [p.name for p in out.parent.iterdir()] == [out.name]


def test_int8_options_are_checked_before_any_work(checkpoint, tmp_path, capsys):
    ckpt = str(checkpoint[1])
    cases = [
        (["-o", str(tmp_path / "m.xml"), "--int8"], "--int8 needs --calibration DATA"),
        (["-o", str(tmp_path / "m.xml"), "--calibration", "d"], "apply to --int8 only"),
        (["-o", str(tmp_path / "m.xml"), "--opset", "18"], "--opset applies to --format onnx"),
        (["-o", str(tmp_path / "m.xml"), "--format", "onnx"], "--format onnx writes an .onnx"),
    ]
    for extra, words in cases:
        assert main(["export", "--checkpoint", ckpt, *extra]) == 2
        assert words in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):  # a usage error, from the parser
        main(["export", "--checkpoint", ckpt, "-o", "m.xml", "--calibration-pairs", "0"])
    assert "--calibration-pairs: '0' is not a positive number" in capsys.readouterr().err
    missing = tmp_path / "missing"
    for suffix in ("xml", "onnx"):
        argv = _int8_argv(ckpt, tmp_path / f"m.{suffix}", missing)
        assert main(argv) == 2  # the data is read before the model is converted
        assert "missing" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_the_export_help_states_the_library_defaults():
    import dataclasses

    from dsifn.cli.commands import export
    from dsifn.interop.onnx import DEFAULT_OPSET

    defaults = {f.name: f.default for f in dataclasses.fields(Calibration)}
    assert export.DEFAULT_PAIRS == defaults["pairs"]
    assert export.DEFAULT_MAX_F1_DROP == defaults["max_f1_drop"]
    assert export.DEFAULT_OPSET == DEFAULT_OPSET
