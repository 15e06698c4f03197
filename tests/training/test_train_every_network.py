"""``dsifn train`` trains every network of the registry: model.name is all it takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dsifn import load_checkpoint
from dsifn.cli.main import main
from dsifn.models import MODELS
from dsifn.training.config import load_config
from fixtures.datasets import write_levir
from fixtures.training import TINY

pytestmark = pytest.mark.usefixtures("one_thread")

# TINY less its DSIFN-only key: model.encoder_weights is no baseline's.
SETTINGS = [o for o in TINY if not o.startswith("model.")]


@pytest.fixture(scope="module")
def levir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_levir(tmp_path_factory.mktemp("levir"), counts=(4, 2, 2))


@pytest.mark.parametrize("name", ["fc_ef", "fc_siam_conc", "fc_siam_diff", "cdnet"])
def test_a_baseline_trains_through_dsifn_train_and_its_loss_falls(
    levir: Path, tmp_path: Path, name: str
) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", str(levir), "--run-dir", str(run), "--no-progress", *SETTINGS]
    overrides = [
        f"model.name={name}",
        "optim.lr=1e-3",
        "schedule.max_steps=12",
        "validation.every_steps=4",
        "epochs=100",
        "run.deterministic=true",
    ]
    assert main([*args, *overrides]) == 0
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [4, 8, 12]
    assert rows[-1]["train_loss"] < 0.9 * rows[0]["train_loss"]  # BCE + Dice on its one output
    assert all(0 <= r["val_s"] <= r["time_s"] for r in rows)
    model = load_checkpoint(run / "best.pt")
    assert type(model) is MODELS[name].network
    assert type(load_config(run / "config.yaml").model).name == name
    payload = torch.load(run / "last.pt", weights_only=True)
    assert payload["meta"]["training"]["model"]["name"] == name


def test_a_dsifn_only_key_is_refused_for_a_baseline_in_one_line(
    levir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", "--data", str(levir), "--run-dir", str(run), "model.name=fc_ef"]
    assert main([*args, "model.freeze_encoder=false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "dsifn train: error: unknown config key 'model.freeze_encoder' for model.name=fc_ef; "
        "valid keys here: model.name, model.in_channels, model.normalization, model.dropout"
    ]
    assert not run.exists()
