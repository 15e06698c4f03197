"""The training loop: exact resume, frozen trunk, run-directory rules, user errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from PIL import Image

from dsifn import load_checkpoint
from dsifn.contract import InputContract
from dsifn.errors import CheckpointError, ConfigError, DataError, DSIFNError, OutputExistsError
from dsifn.models import DSIFN
from dsifn.models.checkpoint import read_checkpoint
from dsifn.training.engine import train
from fixtures.datasets import write_levir
from fixtures.training import tiny_config


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def levir(tmp_path_factory):
    return write_levir(tmp_path_factory.mktemp("levir"), counts=(3, 1, 1))


@pytest.mark.slow
def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, levir, one_thread):
    # Batch 2 over 3 pairs: 2 steps per epoch (the second a single pair); a round every 3
    # steps puts the interruption in the middle of epoch 2, so the resume has to skip exactly
    # the batch already seen. Dropout (0.6) and flips are on: the random states and the
    # augmentation must be replayed too.
    cfg = tiny_config(levir, "validation.every_steps=3", "schedule.scheduler=cosine")
    full = train(cfg, tmp_path / "full", progress=False)

    def stop_at_first_round(entry):
        if entry["step"] == 3:
            raise Interrupted

    with pytest.raises(Interrupted):
        train(cfg, tmp_path / "cut", progress=False, callbacks=[stop_at_first_round])
    saved = read_checkpoint(tmp_path / "cut" / "last.pt")
    assert saved["resume"]["progress"]["epoch"] == 1
    assert saved["resume"]["progress"]["batch_in_epoch"] == 1
    resumed = train(cfg, tmp_path / "cut", resume=True, progress=False)

    expected = full.model.state_dict()
    got = resumed.model.state_dict()
    assert expected.keys() == got.keys()
    different = [k for k in expected if not torch.equal(expected[k], got[k])]
    assert different == []
    assert [e["step"] for e in resumed.history] == [3, 4]
    assert [e["val_loss"] for e in resumed.history] == [e["val_loss"] for e in full.history]
    assert [e["lr"] for e in resumed.history] == [e["lr"] for e in full.history]
    assert resumed.stop_reason == full.stop_reason == "epochs"

    # The frozen trunk is exactly the initial one; the decoder did learn.
    torch.manual_seed(cfg.run.seed)
    initial = DSIFN(cfg.model).state_dict()
    for key, value in got.items():
        if key.startswith("encoder."):
            assert torch.equal(value, initial[key]), key
    assert not torch.equal(got["heads.0.weight"], initial["heads.0.weight"])


@pytest.mark.slow
def test_run_directory_contents_checkpoints_and_step_limit(tmp_path, levir):
    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "best.pt").write_text("stale, from an earlier run")
    # Two batches summed into the one step of the epoch; also the clipping path and the NCHW
    # opt-out (NHWC is the default). bf16 autocast works on the CPU too, but is emulated, and
    # slow, without AMX / AVX512-BF16; the fixtures train in fp32.
    overrides = ("optim.accumulate=2", "optim.grad_clip=1.0", "schedule.max_steps=1")
    more = ("run.channels_last=false", "schedule.scheduler=plateau")
    result = train(tiny_config(levir, *overrides, *more), run, overwrite=True, progress=False)
    assert result.stop_reason == "max_steps"
    assert {p.name for p in run.iterdir()} == {
        "config.yaml",
        "last.pt",
        "best.pt",
        "metrics.jsonl",
        "metrics.csv",
        "curves.png",
    }
    model = load_checkpoint(result.best_checkpoint)
    assert InputContract.of(model).threshold == 0.5
    assert model.checkpoint_meta["training"]["data"]["root"] == str(levir)
    assert model.checkpoint_meta["best_f1"] == result.best_scores["f1"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == len(result.history) == 1
    assert rows[0]["step"] == 1 and rows[0]["epoch"] == 1
    assert rows[0]["stop_reason"] == "max_steps"
    assert set(rows[0]) >= {"train_loss", "train_f1", "val_loss", "val_f1", "val_iou", "lr"}
    assert math.isfinite(rows[0]["train_loss"])
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["epoch", "step", "lr"]
    with Image.open(run / "curves.png") as png:
        assert png.format == "PNG"
    # A weights_only load of last.pt sees every resume entry.
    resume = torch.load(run / "last.pt", weights_only=True)["resume"]
    assert set(resume) >= {"optimizer", "scheduler", "scaler", "progress", "rng"}
    assert (resume["progress"]["epoch"], resume["progress"]["batch_in_epoch"]) == (1, 0)
    assert resume["optimizer"]["state"][0]["step"] == 1  # one Adam step from two batches


def test_existing_run_is_not_reused_without_overwrite(tmp_path, levir):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="`overwrite=True`"):
        train(tiny_config(levir), run, progress=False)
    assert (run / "notes.txt").read_text() == "mine"
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(tiny_config(levir), run, resume=True, progress=False)
    with pytest.raises(ConfigError):
        train(tiny_config(levir), run, resume=True, overwrite=True, progress=False)


def test_a_dataset_without_the_validation_split_is_refused_before_the_run_dir(tmp_path, levir):
    config = tiny_config(levir, "validation.split=holdout")
    found = r"has no 'holdout' split \(found: train, val, test\)"
    with pytest.raises(DataError, match=found + r"; training needs 'train' and 'holdout'$"):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_refused_loss_weights_leave_an_overwritten_run_untouched(tmp_path, levir):
    run = tmp_path / "run"
    run.mkdir()
    old = {"config.yaml": b"old: run\n", "last.pt": b"old last", "best.pt": b"old best"}
    for name, data in old.items():
        (run / name).write_bytes(data)
    config = tiny_config(levir, "loss.weights=[0,0,0,0,0]")
    with pytest.raises(ConfigError, match="all zero, it would learn nothing"):
        train(config, run, overwrite=True, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == old


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("data.root=", ConfigError, "no dataset"),
        ("data.root=/nonexistent/dsifn-data", DataError, "not found"),
        ("validation.split=holdout", DataError, "no 'holdout' split"),
        ("model.in_channels=4", ConfigError, "3 bands"),
    ],
)
def test_user_errors_are_our_exceptions(tmp_path, levir, override, error, match):
    with pytest.raises(error, match=match):
        train(tiny_config(levir, override), tmp_path / "run", progress=False)


def test_a_non_finite_loss_stops_training_with_a_clear_error(tmp_path, levir, monkeypatch):
    from dsifn.losses import DeepSupervisionLoss
    from dsifn.training import step

    class Exploding(DeepSupervisionLoss):
        def forward(self, outputs, target, valid=None):
            return super().forward(outputs, target, valid) * float("nan")

    monkeypatch.setattr(step, "DeepSupervisionLoss", Exploding)
    with pytest.raises(DSIFNError, match=r"loss is not finite \(nan\) at step 1 of epoch 1"):
        train(tiny_config(levir), tmp_path / "run", progress=False)
