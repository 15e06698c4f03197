"""``dsifn train`` on a tiny OSCD-like tree: band files by name, a carved val split, crops."""

from __future__ import annotations

import pytest

from dsifn import load_checkpoint
from dsifn.cli.main import main
from dsifn.training.config import load_config
from fixtures.datasets import write_oscd

# The OSCD writer lives beside the data tests, which make the same tree.
from fixtures.training import TINY

TRAIN_ARGS = [
    *TINY,
    "model.in_channels=3",
    "epochs=1",
    "data.crop_size=32",
    "data.samples_per_epoch=4",  # as many crops as train cities, for speed
    "data.bands=[B04,B03,B02]",
    "data.scale=10000",
]


@pytest.mark.slow
def test_train_reads_oscd_cities_by_band_name(tmp_path, capsys):
    root = write_oscd(tmp_path / "oscd")
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--run-dir", str(run), "--no-progress", *TRAIN_ARGS]
    assert main([*argv, "data.val_cities=[beihai]"]) == 0
    out = capsys.readouterr().out
    assert "OSCD" in out.splitlines()[0]
    resolved = load_config(run / "config.yaml")
    assert resolved.data.bands == ("B04", "B03", "B02")
    assert resolved.data.val_cities == ("beihai",)
    model = load_checkpoint(run / "best.pt")
    assert model.config.in_channels == 3
    contract = model.checkpoint_meta["input_contract"]
    assert contract["bands"] == ["B04", "B03", "B02"] and contract["resampling"] == "bilinear"
    assert contract["scaling"] == {"rule": "fixed", "scale": 10000.0, "stretch": None}


@pytest.mark.slow
def test_a_13_band_model_records_its_band_order_and_predict_follows_it(tmp_path, capsys):
    import numpy as np
    import rasterio

    root = write_oscd(tmp_path / "oscd")
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--run-dir", str(run), "--no-progress"]
    options = [o for o in TRAIN_ARGS if not o.startswith(("data.bands", "model.in_channels"))]
    assert main([*argv, *options, "model.in_channels=13", "data.val_cities=[beihai]"]) == 0
    model = load_checkpoint(run / "best.pt")
    names = model.checkpoint_meta["input_contract"]["bands"]
    assert names[7:9] == ["B08", "B8A"] and len(names) == 13  # the documented order
    city = next(p for p in sorted(root.rglob("imgs_1")) if p.is_dir()).parent
    outs = []
    for order in (sorted, lambda files: sorted(files, reverse=True)):  # any order of files
        out = tmp_path / f"{len(outs)}.tif"
        files = [[str(p) for p in order((city / d).glob("*.tif"))] for d in ("imgs_1", "imgs_2")]
        cmd = ["predict", "--checkpoint", str(run / "best.pt"), "--before", *files[0]]
        assert main([*cmd, "--after", *files[1], "--out", str(out), "--quiet"]) == 0
        with rasterio.open(out) as src:
            outs.append(src.read(1))
            assert src.tags()["bands"].split(",") == names
    np.testing.assert_array_equal(outs[0], outs[1])
    assert "records no input contract" not in capsys.readouterr().err


@pytest.mark.slow
def test_validation_tiles_whole_cities_as_evaluate_and_predict_do(tmp_path):
    import json

    root = write_oscd(tmp_path / "oscd")
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--run-dir", str(run), "--no-progress", *TRAIN_ARGS]
    assert main([*argv, "data.val_cities=[beihai]"]) == 0
    rounds = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rounds[-1]["val_loss"] is None  # NaN (written as null): cities are tiled
    out = tmp_path / "eval"
    evaluate = ["evaluate", "--checkpoint", str(run / "last.pt"), "--data", str(root)]
    options = ["--split", "val", "--precision", "fp32", "--out", str(out)]
    assert main([*evaluate, *options]) == 0
    scored = json.loads((out / "metrics.json").read_text())["scores"]
    for key in ("f1", "iou", "oa"):
        assert scored[key] == pytest.approx(rounds[-1][f"val_{key}"], abs=1e-3), key
