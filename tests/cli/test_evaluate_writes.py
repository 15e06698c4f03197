"""dsifn evaluate checks every output before it writes; a failure leaves every file as it was."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import main
from fixtures.datasets import write_levir
from fixtures.rasters import write_geotiff


def _hashes(*folders: Path) -> dict[str, str]:
    """SHA-256 of every file under the folders (or of the files given), by path."""
    files = [f for folder in folders for f in ([folder] if folder.is_file() else folder.rglob("*"))]
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files if f.is_file()}


@pytest.fixture
def setup(tmp_path):
    data = write_levir(tmp_path / "levir", size=32, counts=(2, 2, 3))
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / "model.pt", DSIFN(encoder_weights=None).eval())
    return {"data": data, "model": model, "out": tmp_path / "eval"}


def _evaluate(setup, *extra: str) -> int:
    argv = ["evaluate", "--checkpoint", str(setup["model"]), "--data", str(setup["data"])]
    return main(
        [*argv, "--out", str(setup["out"]), "--device", "cpu", "--precision", "fp32", *extra]
    )


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dsifn evaluate: error: "), err
    return err[0]


def test_existing_masks_refuse_the_run_before_the_checkpoint_is_tuned(setup, capsys):
    assert _evaluate(setup, "--save-masks") == 0
    (setup["out"] / "metrics.json").unlink()  # only the masks are left in the way
    before = _hashes(setup["out"], setup["model"])
    capsys.readouterr()
    assert _evaluate(setup, "--save-masks", "--tune-threshold") == 2
    assert "masks/test_0.png exists" in _one_error_line(capsys)
    assert _hashes(setup["out"], setup["model"]) == before  # the checkpoint too


def test_a_failure_mid_run_with_overwrite_changes_nothing(setup, capsys):
    assert _evaluate(setup, "--save-masks", "--report") == 0
    before = _hashes(setup["out"], setup["model"])
    # The last test pair is corrupt: found only when it is read, after two pairs were scored.
    (setup["data"] / "test" / "B" / "test_2.png").write_bytes(b"\x89PNG broken")
    capsys.readouterr()
    argv = ("--save-masks", "--report", "--tune-threshold", "--overwrite")
    assert _evaluate(setup, *argv) == 2
    assert "test_2.png is not a readable image" in _one_error_line(capsys)
    assert _hashes(setup["out"], setup["model"]) == before
    assert not list(setup["out"].parent.rglob(".dsifn-*"))  # no staging left behind


def test_a_fresh_run_creates_nothing_when_it_fails(setup, capsys):
    (setup["data"] / "test" / "A" / "test_1.png").write_bytes(b"broken")
    assert _evaluate(setup, "--save-masks", "--save-errors", "--report") == 2
    _one_error_line(capsys)
    assert not setup["out"].exists()


def test_tuned_threshold_and_outputs_arrive_together(setup, capsys):
    assert _evaluate(setup, "--save-masks", "--tune-threshold") == 0
    metrics = json.loads((setup["out"] / "metrics.json").read_text())
    from dsifn import load_checkpoint
    from dsifn.contract import InputContract

    assert InputContract.of(load_checkpoint(setup["model"])).threshold == metrics["threshold"]
    assert sorted(p.name for p in (setup["out"] / "masks").iterdir()) == [
        f"test_{i}.png" for i in range(3)
    ]


def test_pixels_left_out_are_counted_in_the_table(tmp_path, capsys):
    # One test pair of float rasters: NaN in T1 (nodata) and NaN in the label (not labelled).
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        t1 = rng.random((3, 32, 32), dtype=np.float32)
        t2 = t1.copy()
        label = np.zeros((32, 32), np.float32)
        if split == "test":
            t1[:, :2, :] = np.nan  # 64 pixels without data
            label[10, :5] = np.nan  # 5 pixels not labelled
        for sub, array in (("A", t1), ("B", t2), ("label", label)):
            write_geotiff(root / split / sub / "p.tif", array, nodata=None)
    model = save_checkpoint(tmp_path / "m.pt", DSIFN(encoder_weights=None).eval())
    argv = ["evaluate", "--checkpoint", str(model), "--data", str(root), "--device", "cpu"]
    assert main([*argv, "--out", str(tmp_path / "eval")]) == 0
    printed = capsys.readouterr().out
    assert "left out   64 pixels without data" in printed and "5 not labelled" in printed
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["left_out"] == {"nodata": 64, "ignored": 5}
    assert metrics["pixels"] == 32 * 32 - 64 - 5


def test_saved_masks_are_transparent_where_a_date_has_no_data(tmp_path):
    root = write_levir(tmp_path / "levir", size=32, counts=(1, 1, 1))
    test_a = root / "test" / "A" / "test_0.png"
    rgba = np.dstack([np.asarray(Image.open(test_a)), np.full((32, 32), 255, np.uint8)])
    rgba[:4, :, 3] = 0  # transparent rows in T1: no data
    Image.fromarray(rgba).save(test_a)
    model = save_checkpoint(tmp_path / "m.pt", DSIFN(encoder_weights=None).eval())
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(model), "--data", str(root), "--device", "cpu"]
    assert main([*argv, "--out", str(out), "--save-masks"]) == 0
    with Image.open(out / "masks" / "test_0.png") as mask:
        assert mask.mode == "LA"
        alpha = np.asarray(mask)[..., 1]
    assert (alpha[:4] == 0).all() and (alpha[4:] == 255).all()
