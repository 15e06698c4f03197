"""Errors that used to take several lines on stderr now take one, and nothing before it."""

from __future__ import annotations

import shutil

import numpy as np
import torch

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import main
from fixtures.datasets import write_levir
from fixtures.rasters import write_geotiff


def _stderr_lines(capsys) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


def _model(tmp_path, bands=3):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path / "m.pt", DSIFN(encoder_weights=None, in_channels=bands))


def test_a_band_out_of_range_is_the_only_line(tmp_path, capsys):
    data = np.random.default_rng(0).integers(1, 1000, (4, 32, 32)).astype("uint16")
    t1, t2 = (write_geotiff(tmp_path / f"t{i}.tif", data) for i in (1, 2))
    argv = ["predict", "--checkpoint", str(_model(tmp_path)), "--before", str(t1)]
    argv += ["--after", str(t2), "--out", str(tmp_path / "o.tif"), "--bands", "1,2,5"]
    assert main(argv) == 2
    assert _stderr_lines(capsys) == [
        "dsifn predict: error: T1 has 4 band(s); band 5 is out of range 1..4"
    ]
    assert not (tmp_path / "o.tif").exists()


def test_folders_with_no_matching_names_give_one_line(tmp_path, capsys):
    data = np.random.default_rng(0).integers(1, 1000, (3, 32, 32)).astype("uint16")
    write_geotiff(tmp_path / "d1" / "a.tif", data)
    write_geotiff(tmp_path / "d2" / "b.tif", data)
    argv = ["predict", "--checkpoint", str(_model(tmp_path)), "--before-dir", str(tmp_path / "d1")]
    argv += ["--after-dir", str(tmp_path / "d2"), "--out-dir", str(tmp_path / "o")]
    assert main(argv) == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith("dsifn predict: error: no file names in") and "2 image(s)" in line


def test_a_corrupt_image_read_by_a_worker_is_one_line(tmp_path, capsys):
    root = write_levir(tmp_path / "levir", counts=(1, 1, 2))
    (root / "test" / "A" / "test_1.png").write_bytes(b"\x89PNG broken")
    argv = ["evaluate", "--checkpoint", str(_model(tmp_path)), "--data", str(root)]
    assert main([*argv, "--workers", "1", "--device", "cpu"]) == 2
    (line,) = _stderr_lines(capsys)
    assert line.startswith("dsifn evaluate: error: test_1: T1 file")
    assert "test_1.png is not a readable image" in line


def test_folder_flags_are_refused_for_one_pair_and_skips_are_counted(tmp_path, capsys):
    data = np.random.default_rng(0).integers(1, 1000, (3, 32, 32)).astype("uint16")
    for name in ("a.tif", "b.tif"):
        write_geotiff(tmp_path / "d1" / name, data)
        write_geotiff(tmp_path / "d2" / name, data)
    model = str(_model(tmp_path))
    one = ["predict", "--checkpoint", model, "--before", str(tmp_path / "d1" / "a.tif")]
    one += ["--after", str(tmp_path / "d2" / "a.tif"), "--out", str(tmp_path / "o.tif")]
    assert main([*one, "--skip-existing"]) == 2
    assert "are for folders" in _stderr_lines(capsys)[0]
    folders = ["predict", "--checkpoint", model, "--before-dir", str(tmp_path / "d1")]
    folders += ["--after-dir", str(tmp_path / "d2"), "--out-dir", str(tmp_path / "o"), "--quiet"]
    assert main([*folders, "--num-splits", "2", "--split-index", "0"]) == 0
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["a.tif"]
    capsys.readouterr()
    assert main([*folders, "--skip-existing"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 pair whose complete map exists" in out and "wrote" in out
    assert main([*folders, "--num-splits", "2", "--split-index", "2"]) == 2
    assert "--split-index must be in 0..1" in _stderr_lines(capsys)[0]
    shutil.rmtree(tmp_path / "o")
