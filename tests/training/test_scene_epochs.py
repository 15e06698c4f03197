"""Training on a scene dataset (OSCD): epochs of crops drawn by area, resumed exactly."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from dsifn.contract import InputContract
from dsifn.models.checkpoint import read_checkpoint
from dsifn.training.engine import train
from fixtures.datasets import write_oscd
from fixtures.training import tiny_config


@pytest.mark.slow
def test_an_epoch_of_crops_resumes_exactly_and_records_reflectance(tmp_path, one_thread):
    root = write_oscd(tmp_path / "oscd", official=True)
    # 5 crops per epoch, batch 2: 3 steps an epoch (the last a single crop); a round every 4
    # steps puts the stop in the middle of epoch 2.
    cfg = tiny_config(
        root,
        "data.bands=[B04,B03,B02]",
        "data.crop_size=32",
        "data.samples_per_epoch=5",
        "validation.every_steps=4",
    )
    full = train(cfg, tmp_path / "full", progress=False)
    assert [e["step"] for e in full.history] == [4, 6]
    # Stopped by a step limit after the round at step 4, then resumed without it.
    cut = train(replace(cfg, schedule=replace(cfg.schedule, max_steps=4)), tmp_path / "cut",
                progress=False)  # fmt: skip
    assert cut.stop_reason == "max_steps"
    saved = read_checkpoint(tmp_path / "cut" / "last.pt")
    assert saved["resume"]["progress"]["batch_in_epoch"] == 1
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)
    expected, got = full.model.state_dict(), resumed.model.state_dict()
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []
    # OSCD's digital numbers were read as reflectance, and the checkpoint says so.
    contract = InputContract.from_meta(saved["meta"], full.model.config)
    assert contract.radiometry == "reflectance" and contract.bands == ("B04", "B03", "B02")
