"""The demo pipeline in a tiny configuration (the real 10-minute demo is not a unit test)."""

from __future__ import annotations

import json
import math

import pytest

from dsifn import load_checkpoint
from dsifn.cli.main import main
from dsifn.contract import InputContract
from dsifn.demo import DemoConfig, run_demo
from dsifn.errors import ConfigError, OutputExistsError

TINY = DemoConfig(
    size=32, train_pairs=2, val_pairs=1, test_pairs=2, batch_size=2, max_steps=1, device="cpu"
)


@pytest.mark.slow
def test_tiny_demo_writes_everything(tmp_path):
    lines: list[str] = []
    result = run_demo(tmp_path / "demo", TINY, progress=False, log=lines.append)
    out = tmp_path / "demo"
    assert result.stop_reason == "max_steps"
    for path in (
        "data/synthetic.json",
        "data/test/A/0001.png",
        "run/best.pt",
        "run/curves.png",
        "run/metrics.jsonl",
        "metrics.json",
        "report.html",
        "masks/0000.png",
        "errors/0001.png",
        "report/0000_before.png",
    ):
        assert (out / path).is_file(), path
    summary = json.loads((out / "metrics.json").read_text())
    for method in ("dsifn", "pixel_difference"):
        scores = summary[method]["scores"]
        assert all(math.isfinite(v) for v in scores.values()), method
        assert summary[method]["pixels"] == 2 * 32 * 32
    assert summary["dsifn"]["scores"]["f1"] == pytest.approx(result.dsifn.scores["f1"])
    assert summary["train_steps"] == 1 and summary["stop_reason"] == "max_steps"
    # The checkpoint carries the threshold chosen on the validation split.
    model = load_checkpoint(result.checkpoint)
    assert InputContract.of(model).threshold == pytest.approx(result.dsifn.threshold)
    assert model.config.encoder_weights is None and not model.config.freeze_encoder
    page = (out / "report.html").read_text()
    assert "run/curves.png" in page and "pixel difference" in page
    assert any(line.startswith("test F1: DSIFN") for line in lines)
    # A second run into the same folder is refused rather than replacing the first.
    before = (out / "metrics.json").read_bytes()
    with pytest.raises(OutputExistsError, match="`overwrite=True`"):
        run_demo(out, TINY, progress=False, log=lines.append)
    assert (out / "metrics.json").read_bytes() == before


def test_demo_cli_refuses_a_non_empty_folder(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["demo", "--out", str(tmp_path), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--overwrite" in err[0]
    assert (tmp_path / "mine.txt").read_text() == "keep"


def test_demo_config_checks():
    with pytest.raises(ConfigError, match="budget"):
        DemoConfig(minutes=0)
    with pytest.raises(ConfigError, match="each split"):
        DemoConfig(test_pairs=0)
    assert main(["demo", "--minutes", "-1"]) == 2


def test_demo_training_config_is_offline_and_budgeted():
    from dsifn.demo import _train_config

    config = _train_config(TINY, "/data", minutes=2.5)
    assert config.model.encoder_weights is None  # nothing to download
    assert config.schedule.max_minutes == 2.5 and config.schedule.max_steps == 1
    assert config.run.seed == TINY.seed and config.data.root == "/data"
