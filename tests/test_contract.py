"""One path from pixels to change map: what training recorded is what every command feeds.

A tiny DSIFN is trained through the CLI on 4-band uint16 GeoTIFFs with a band selection and a
fixed scale; prediction (torch and ONNX) and evaluation then read the files the same way with
no band or scale flag, and the test checks this against the network run on input it builds
itself, from the files, without the package's readers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from PIL import Image

from dsifn import load_checkpoint
from dsifn.cli.main import main
from dsifn.contract import CONTRACT_KEY, InputContract, is_change
from fixtures.rasters import write_geotiff
from fixtures.training import TINY

SIZE = 48
# Compared with fp32 arithmetic: `auto` takes bf16 on CPUs that have it.
FP32 = ["--precision", "fp32", "--quiet"]
BANDS = [3, 2, 1]
SCALE = 10000.0
TRAIN_ARGS = [
    *TINY,
    f"data.bands=[{','.join(map(str, BANDS))}]",
    f"data.scale={SCALE:g}",
    "model.in_channels=3",
    "epochs=1",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A LEVIR-layout folder of 4-band uint16 GeoTIFFs and a model trained on it."""
    root = tmp_path_factory.mktemp("s2like")
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("val", 1), ("test", 1)):
        for sub in ("A", "B", "label"):
            (root / split / sub).mkdir(parents=True)
        for i in range(count):
            t1 = rng.integers(200, 3000, (4, SIZE, SIZE), dtype=np.uint16)
            t2 = t1.copy()
            t2[:, 10:30, 12:34] = 9000
            label = np.zeros((SIZE, SIZE), np.uint8)
            label[10:30, 12:34] = 255
            write_geotiff(root / split / "A" / f"p{i}.tif", t1, nodata=None)
            write_geotiff(root / split / "B" / f"p{i}.tif", t2, nodata=None)
            Image.fromarray(label).save(root / split / "label" / f"p{i}.png")
    run = root / "run"
    argv = ["train", "--data", str(root), "--run-dir", str(run), "--no-progress", *TRAIN_ARGS]
    assert main(argv) == 0
    return root, run / "best.pt"


def _expected(checkpoint, before, after):
    """The network's probabilities on input built here: bands 3,2,1 / 10000, normalised."""
    model = load_checkpoint(checkpoint).eval()
    norm = model.config.input_normalization
    mean = torch.tensor(norm.mean).view(1, -1, 1, 1)
    std = torch.tensor(norm.std).view(1, -1, 1, 1)
    dates = []
    for path in (before, after):
        with rasterio.open(path) as src:
            raw = src.read(BANDS).astype(np.float64)
        scaled = torch.from_numpy(np.clip(raw / SCALE, 0, 1)).float()[None]
        dates.append((scaled * norm.scale - mean) / std)
    with torch.no_grad():
        return torch.sigmoid(model(*dates).stride1)[0, 0].numpy()


def _read(path, band=1):
    with rasterio.open(path) as src:
        return src.read(band), src.tags()


def test_training_records_the_contract(trained):
    _, checkpoint = trained
    model = load_checkpoint(checkpoint)
    contract = InputContract.from_meta(model.checkpoint_meta, model.config)
    assert contract.origin == "recorded"
    assert contract.bands == tuple(BANDS) and contract.band_count == 3
    assert contract.scaling.rule == "fixed" and contract.scaling.scale == SCALE
    assert contract.threshold_rule == "p > t"
    assert CONTRACT_KEY in load_checkpoint(checkpoint).checkpoint_meta


@pytest.mark.slow
def test_predict_reads_the_files_as_training_did_through_torch_and_onnx(trained, tmp_path, capsys):
    root, checkpoint = trained
    before, after = root / "test" / "A" / "p0.tif", root / "test" / "B" / "p0.tif"
    expected = _expected(checkpoint, before, after)

    out = tmp_path / "torch.tif"
    argv = ["predict", "--checkpoint", str(checkpoint), "--before", str(before)]
    assert main([*argv, "--after", str(after), "--out", str(out), *FP32]) == 0
    assert capsys.readouterr().err == ""  # nothing overridden, nothing to say
    got, tags = _read(out)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert tags["bands"] == "3,2,1" and "10000" in tags["scaling"]

    onnx = tmp_path / "model.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "-o", str(onnx)]) == 0
    out_onnx = tmp_path / "onnx.tif"
    argv = ["predict", "--checkpoint", str(onnx), "--before", str(before), "--after", str(after)]
    assert main([*argv, "--out", str(out_onnx), "--quiet"]) == 0  # ONNX runs in fp32
    np.testing.assert_allclose(_read(out_onnx)[0], expected, atol=1e-5)

    # A flag that replaces a recorded value is honoured and said in one line.
    argv = ["predict", "--checkpoint", str(checkpoint), "--before", str(before)]
    argv += ["--after", str(after), "--out", str(tmp_path / "s.tif"), *FP32]
    assert main([*argv, "--scale", "255"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["dsifn: using scale 255 as asked; the model was trained with scale 10000"]


@pytest.mark.parametrize("tile", [None, "32"])  # whole images, and tiled as scenes are
def test_evaluate_masks_equal_predict_masks(trained, tmp_path, tile):
    root, checkpoint = trained
    tiles = [] if tile is None else ["--tile-size", tile]
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(checkpoint), "--data", str(root), "--split", "test"]
    assert main([*argv, "--out", str(out), "--save-masks", *tiles]) == 0
    evaluated = np.asarray(Image.open(out / "masks" / "p0.png")) > 0
    mask = tmp_path / "mask.tif"
    argv = ["predict", "--checkpoint", str(checkpoint), "--mode", "mask", "--quiet", *tiles]
    argv += ["--before", str(root / "test" / "A" / "p0.tif")]
    assert main([*argv, "--after", str(root / "test" / "B" / "p0.tif"), "--out", str(mask)]) == 0
    predicted = _read(mask)[0] == 1
    np.testing.assert_array_equal(evaluated, predicted)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold"] == pytest.approx(0.5)


def test_evaluation_tiles_large_images_as_predict_does(trained):
    from dsifn.evaluation.scoring import runner_scorer
    from dsifn.inference.loading import load_runner

    _, checkpoint = trained
    runner = load_runner(checkpoint, precision="fp32")
    images = torch.rand(1, 2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    whole = runner_scorer(runner)(images)
    tiled = runner_scorer(runner, tile_size=32)(images)
    assert whole.shape == tiled.shape == (1, 1, SIZE, SIZE)
    gap = float((whole - tiled).abs().max())
    assert 0 < gap < 0.5  # tiles see less context: close, yet not the whole-image pass


def test_older_checkpoints_work_with_a_one_line_notice(trained, tmp_path, capsys):
    root, checkpoint = trained
    payload = torch.load(checkpoint, weights_only=True)
    del payload["meta"][CONTRACT_KEY]  # as written before contracts existed
    old = tmp_path / "old.pt"
    torch.save(payload, old)
    out = tmp_path / "old.tif"
    argv = ["predict", "--checkpoint", str(old), "--before", str(root / "test" / "A" / "p0.tif")]
    argv += ["--after", str(root / "test" / "B" / "p0.tif"), "--out", str(out), *FP32]
    assert main(argv) == 0
    err = capsys.readouterr().err.strip().splitlines()
    notes = [line for line in err if "records no input contract" in line]
    assert len(notes) == 1 and "bands 3,2,1" in notes[0] and "scale 10000" in notes[0]
    np.testing.assert_allclose(
        _read(out)[0], _read_expected(checkpoint, root), atol=1e-5
    )  # the training configuration it records is read as before


def _read_expected(checkpoint, root):
    return _expected(checkpoint, root / "test" / "A" / "p0.tif", root / "test" / "B" / "p0.tif")


def test_the_rule_is_strict_for_arrays_and_tensors():
    p = np.array([0.3, np.float32(0.3), 0.30001, np.nan], dtype=np.float32)
    t = float(np.float32(0.3))
    np.testing.assert_array_equal(is_change(p, t), [False, False, True, False])
    np.testing.assert_array_equal(is_change(torch.from_numpy(p), t).numpy(), is_change(p, t))
