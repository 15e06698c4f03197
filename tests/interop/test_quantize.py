"""int8 quantisation: calibration tiles, the accuracy cost, its refusal, and both runtimes' int8."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import shutil

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

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
    split_pairs,
)
from dsifn.models.checkpoint import save_checkpoint
from dsifn.normalization import IMAGENET_RGB
from fixtures.datasets import write_levir
from fixtures.rasters import write_geotiff

CONTRACT = InputContract(band_count=3, normalization=IMAGENET_RGB, threshold=0.4)


def test_calibration_tiles_are_read_through_the_contract(levir):
    tiles = read_calibration(CONTRACT, Calibration(levir, pairs=4))
    assert tiles.split == "val" and len(tiles.inputs) == 4 and len(tiles.held_out) == 1
    # Images smaller than a tile are tiles of their own, one per pair, pairs in a fixed
    # shuffled order (3, 2, 5, 4, 0, 1 for 6 pairs); the last pair of it is held out.
    assert tiles.calibration_pairs == ["val_3", "val_2", "val_5", "val_4"]
    assert tiles.held_out_pairs == ["val_1"]
    assert [t["name"] for t in tiles.held_out] == ["val_1@0,0"]
    assert tiles.tile_size == 512 and tiles.tile_shapes == ["32x32"]
    val = ChangeDetectionDataset(reading_config(CONTRACT, str(levir)), "val")
    first = val[3]["image"]  # the first pair visited
    for date, name in enumerate(("t1", "t2")):
        expected = CONTRACT.normalization(first[date][None]).numpy()
        np.testing.assert_array_equal(tiles.inputs[0][name], expected)
    held = tiles.held_out[0]
    assert torch.equal(held["image"][0], val[1]["image"])
    assert torch.equal(held["mask"][0], val[1]["mask"]) and held["valid"].all()
    # 16-pixel tiles: 2 of 8 tiles asked are held out, so 2 of the 6 pairs are (a quarter,
    # rounded); 6 tiles come from the other 4, two spread tiles from each pair visited.
    small = read_calibration(CONTRACT, Calibration(levir, pairs=6, held_out=2, tile_size=16))
    assert small.calibration_tiles == [
        f"val_{i}@{cell}" for i in (3, 2, 5) for cell in ("0,16", "16,16")
    ]
    assert [t["name"] for t in small.held_out] == ["val_0@16,0", "val_1@16,0"]
    assert small.inputs[0]["t1"].shape == (1, 3, 16, 16) and small.tile_shapes == ["16x16"]
    # A split with fewer tiles than asked: each side keeps what its own pairs hold.
    few = read_calibration(CONTRACT, Calibration(levir, split="test", pairs=64))
    assert (few.split, len(few.inputs), len(few.held_out)) == ("test", 2, 1)
    assert (len(few.calibration_pairs), len(few.held_out_pairs)) == (2, 1)


@pytest.mark.parametrize("count", range(1, 8))
def test_the_pair_split_is_disjoint_and_complete_for_every_size(count):
    for calibrating, held_out in [(1, 1), (4, 1), (4, 4), (7, 2), (9, 3), (64, 16), (1, 99)]:
        if count == 1:
            with pytest.raises(DataError, match="2 or more pairs"):
                split_pairs(count, calibrating, held_out)
            continue
        first, second = split_pairs(count, calibrating, held_out)
        assert first and second and not set(first) & set(second)
        assert sorted(first + second) == list(range(count))
        # The rule the docstring states: the held-out share of the tiles, in pairs.
        share = round(count * held_out / (calibrating + held_out) + 1e-9)
        assert len(second) == min(count - 1, max(1, share))
        assert (first, second) == split_pairs(count, calibrating, held_out)  # fixed


@pytest.fixture(scope="module")
def splits_of_1_to_7(tmp_path_factory):
    """Datasets whose splits hold 1 to 7 pairs of 32 pixels: split name -> (root, pairs)."""
    root = tmp_path_factory.mktemp("splits")
    found = {}
    for index, counts in enumerate([(1, 2, 3), (4, 5, 6), (7, 1, 1)]):
        data = write_levir(root / str(index), size=32, counts=counts, seed=index)
        for split, count in zip(("train", "val", "test"), counts, strict=True):
            found.setdefault(count, (data, split))
    return found


@pytest.mark.parametrize("tile_size", [16, None])  # 4 tiles a pair, or 1 (the image's size)
def test_held_out_tiles_share_no_pair_with_calibrating_ones(splits_of_1_to_7, tile_size):
    per_pair = 4 if tile_size == 16 else 1
    for count, (data, split) in sorted(splits_of_1_to_7.items()):
        # Counts on and off pair boundaries, fewer and more tiles than the split holds.
        for pairs, held in [(4, 4), (7, 2), (9, 3), (3, 1), (64, None), (1, 5)]:
            calibration = Calibration(data, split=split, pairs=pairs, held_out=held)
            calibration = dataclasses.replace(calibration, tile_size=tile_size)
            if count == 1:
                with pytest.raises(DataError, match=f"split {split} of .* has 1 pair"):
                    read_calibration(CONTRACT, calibration)
                continue
            tiles = read_calibration(CONTRACT, calibration)
            mine, others = set(tiles.calibration_pairs), set(tiles.held_out_pairs)
            assert mine and others and not mine & others, (count, pairs, held)
            assert {name.split("@")[0] for name in tiles.calibration_tiles} == mine
            assert {t["name"].split("@")[0] for t in tiles.held_out} == others
            # The pairs read are the first of each side's, in its order.
            sides = split_pairs(count, pairs, calibration.wanted_held_out)
            names = [[f"{split}_{i}" for i in side] for side in sides]
            assert tiles.calibration_pairs == names[0][: len(mine)]
            assert tiles.held_out_pairs == names[1][: len(others)]
            assert len(tiles.inputs) == min(pairs, per_pair * len(sides[0]))
            assert len(tiles.held_out) == min(calibration.wanted_held_out, per_pair * len(sides[1]))


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
    # One pair cannot be both calibrated on and held out: refused, not measured on itself.
    write_levir(tmp_path / "one", size=32, counts=(1, 0, 1))
    with pytest.raises(DataError, match=r"has 1 pair\(s\); .* needs 2 or more"):
        read_calibration(CONTRACT, Calibration(tmp_path / "one", split="train", tile_size=16))
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
    assert same.max_probability_difference == 0
    # 3 of 5 tiles held out: 4 of the 6 pairs are (2 for the 2 calibrating tiles); the
    # images are 32 pixels, so the tiles are 32 pixels whatever side was asked.
    assert (same.calibration_tiles, same.calibration_pairs) == (2, 2)
    assert (same.held_out_tiles, same.held_out_pairs) == (3, 3)
    assert (same.tile_shapes, same.tile_size_asked) == (("32x32",), 512)
    assert "on 3 held-out 32x32 tile(s) of 3 pair(s) of split val (2 tile(s) of 2 other" in (
        same.describe()
    )
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
    assert "int8 against fp32 on 1 held-out 32x32 tile(s) of 1 pair(s)" in printed
    assert "(int8)" in printed
    info = read_info(out)
    fp32 = read_info(openvino_file)
    assert info["precision"] == "int8" and info["input_contract"] == fp32["input_contract"]
    cost = QuantizationCost.from_dict(info["quantization"])
    assert (cost.method, cost.split, cost.tile_shapes) == ("nncf", "val", ("32x32",))
    assert (cost.calibration_tiles, cost.calibration_pairs) == (4, 4)
    assert (cost.held_out_tiles, cost.held_out_pairs) == (1, 1)
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
    assert (cost.calibration_tiles, cost.calibration_pairs) == (1, 1)
    assert (cost.held_out_tiles, cost.held_out_pairs) == (1, 1)
    assert 0 < cost.max_probability_difference < 0.2
    assert out.stat().st_size < onnx_file.stat().st_size / 3
    runner = OnnxRunner(out, device="cpu")
    rng = np.random.default_rng(2)
    t1, t2 = (rng.normal(size=(1, 3, 32, 32)).astype(np.float32) for _ in "ab")
    gap = np.abs(runner(t1, t2) - OnnxRunner(onnx_file, device="cpu")(t1, t2)).max()
    assert 0 < gap < 0.2 and "int8" in runner.describe()


def _digests(folder):
    """SHA-256 of every file under ``folder``, by path: what a failed command must not change."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _refused(capsys, argv, folder):
    """Run ``dsifn ARGV``: exit 2, one line on stderr, every file under ``folder`` unchanged."""
    before = _digests(folder)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert _digests(folder) == before
    return err


@pytest.fixture(scope="module")
def blank_calibration(checkpoint, tmp_path_factory):
    """A checkpoint of the test model deciding at its median, and data that breaks int8.

    The val split has 4 pairs: the 3 that calibrate (:func:`split_pairs`) are blank (one grey,
    the same on both dates), the one held out is a real pair labelled with the fp32 model's
    own decisions. So fp32 scores F1 100 on it, and an int8 model whose activation ranges were
    set on blank tiles flips many of its decisions: a real drop, measured as any other. (With
    real pairs to calibrate on, the same export lost about 4 points, as decisions at the
    median are fragile; with blank ones about 40.)
    """
    model = checkpoint[0]
    root = tmp_path_factory.mktemp("blank")
    _, held = split_pairs(4, 3, Calibration(root, pairs=3).wanted_held_out)
    rng = np.random.default_rng(4)
    t1 = rng.integers(40, 120, (3, 32, 32), dtype=np.uint8)
    t2 = t1.copy()
    t2[:, 8:20, 8:20] = 230
    norm = model.config.input_normalization
    with torch.no_grad():
        dates = (norm(torch.from_numpy(t)[None].float() / 255) for t in (t1, t2))
        probability = torch.sigmoid(model(*dates)[0])[0, 0].numpy()
    threshold = float(np.median(probability))
    grey = np.full((3, 32, 32), 128, dtype=np.uint8)
    for sub in ("A", "B", "label"):
        (root / "val" / sub).mkdir(parents=True)
    for index in range(4):  # the dataset lists val_0 ... val_3 in this order
        real = index in held
        pair = (t1, t2) if real else (grey, grey)
        label = is_change(probability, threshold) if real else np.zeros((32, 32), bool)
        for sub, image in zip(("A", "B"), pair, strict=True):
            Image.fromarray(image.transpose(1, 2, 0)).save(root / "val" / sub / f"val_{index}.png")
        Image.fromarray(label.astype(np.uint8) * 255).save(
            root / "val" / "label" / f"val_{index}.png"
        )
    assert 0.3 < is_change(probability, threshold).mean() < 0.7
    median = save_checkpoint(root / "median.pt", model, meta={"threshold": threshold})
    return root, median


@pytest.mark.slow  # a whole export and quantisation: 10 to 20 s on 2 cores
@pytest.mark.parametrize("suffix", ["xml", "onnx"])
def test_a_real_f1_drop_is_refused_and_every_file_kept(
    blank_calibration, openvino_file, onnx_file, tmp_path, capsys, suffix
):
    if suffix == "xml":
        pytest.importorskip("nncf")
    data, median = blank_calibration
    # An existing model in the output's place: a failed export must leave it as it was.
    out = tmp_path / f"model.{suffix}"
    source = openvino_file if suffix == "xml" else onnx_file
    shutil.copyfile(source, out)
    if suffix == "xml":
        shutil.copyfile(source.with_suffix(".bin"), out.with_suffix(".bin"))
    argv = ["export", "--checkpoint", str(median), "-o", str(out), "--int8", "--no-check"]
    argv += ["--calibration", str(data), "--calibration-pairs", "3", "--overwrite"]
    err = _refused(capsys, argv, tmp_path)
    assert "F1 points against fp32 (F1 100.00 -> " in err
    assert "on 1 held-out 32x32 tile(s) of 1 pair(s) of split val (3 tile(s) of 3 other" in err
    assert "more than the 1 allowed (--max-f1-drop); nothing was written" in err
    drop = float(err.split("loses ")[1].split(" F1")[0])
    assert drop > 10  # a real drop, far past the limit
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [out.name] + ([out.with_suffix(".bin").name] if suffix == "xml" else [])
    )


@pytest.mark.parametrize("suffix", ["xml", "onnx"])
def test_failed_exports_leave_every_existing_file_as_it_was(
    checkpoint, levir, tmp_path, capsys, suffix
):
    ckpt = str(checkpoint[1])
    out = tmp_path / f"model.{suffix}"
    out.write_bytes(b"an existing model")
    if suffix == "xml":
        out.with_suffix(".bin").write_bytes(b"its weights")
    # A calibration folder that is not a dataset, with --overwrite: refused before any write.
    bad = tmp_path / "notes"
    bad.mkdir()
    (bad / "readme.txt").write_text("no images here")
    argv = _int8_argv(ckpt, out, bad, "--overwrite")
    assert "notes" in _refused(capsys, argv, tmp_path)
    # A split of one pair cannot measure what int8 costs.
    one = write_levir(tmp_path / "one", size=32, counts=(1, 0, 1))
    argv = _int8_argv(ckpt, out, one, "--overwrite", "--calibration-split", "train")
    err = _refused(capsys, argv, tmp_path)
    assert "has 1 pair(s)" in err and "(name another --calibration-split)" in err
    # Existing outputs without --overwrite: the .xml, or its .bin alone.
    assert "--overwrite" in _refused(capsys, _int8_argv(ckpt, out, levir), tmp_path)
    if suffix == "xml":
        out.unlink()
        assert "model.bin exists" in _refused(capsys, _int8_argv(ckpt, out, levir), tmp_path)


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
