"""``dsifn train`` on a tiny OSCD-like tree: band files by name, a carved val split, crops."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dsifn import load_checkpoint
from dsifn.cli.main import main
from dsifn.training.config import load_config

# The OSCD writer lives beside the data tests, which make the same tree.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from fakedata import write_oscd

TINY = [
    "model.encoder_weights=null",
    "model.in_channels=3",
    "run.device=cpu",
    "run.precision=fp32",
    "run.num_workers=0",
    "run.batch_size=2",
    "run.tensorboard=false",
    "epochs=1",
    "data.crop_size=32",
    "data.bands=[B04,B03,B02]",
    "data.scale=10000",
]


@pytest.mark.slow
def test_train_reads_oscd_cities_by_band_name(tmp_path, capsys):
    root = write_oscd(tmp_path / "oscd")
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--run-dir", str(run), "--no-progress", *TINY]
    assert main([*argv, "data.val_cities=[beihai]"]) == 0
    out = capsys.readouterr().out
    assert "OSCD" in out.splitlines()[0]
    resolved = load_config(run / "config.yaml")
    assert resolved.data.bands == ("B04", "B03", "B02")
    assert resolved.data.val_cities == ("beihai",)
    model = load_checkpoint(run / "best.pt")
    assert model.config.in_channels == 3
