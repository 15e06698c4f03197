"""Random states as plain values, and the run's log files."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import torch
from PIL import Image

from dsifn.training.logs import MetricsLog, history_csv, plot_curves
from dsifn.training.state import capture_rng, restore_rng, seed_everything


def _draw():
    return torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)]


def test_rng_states_survive_a_weights_only_round_trip():
    seed_everything(123)
    _draw()
    buffer = io.BytesIO()
    torch.save(capture_rng(), buffer)
    expected = _draw()
    seed_everything(999)  # move every generator elsewhere
    buffer.seek(0)
    restore_rng(torch.load(buffer, weights_only=True))
    got = _draw()
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def test_history_csv_has_every_column_once_in_first_seen_order():
    text = history_csv([{"epoch": 1, "val_f1": 0.5}, {"epoch": 2, "val_f1": 0.6, "stop": "x"}])
    assert text.splitlines() == ["epoch,val_f1,stop", "1,0.5,", "2,0.6,x"]


def test_metrics_log_writes_json_lines_with_null_for_nan(tmp_path):
    log = MetricsLog(tmp_path, tensorboard=False)
    history = [{"epoch": 1, "step": 4, "train_loss": 0.7, "val_f1": float("nan")}]
    log.write(history)
    log.close()
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == [{"epoch": 1, "step": 4, "train_loss": 0.7, "val_f1": None}]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0] == "epoch,step,train_loss,val_f1"


def test_curves_png_is_written_even_with_missing_values(tmp_path):
    history = [
        {"step": 1, "train_loss": 1.0, "val_loss": 1.1, "val_f1": 0.1, "val_iou": 0.05, "lr": 1e-4},
        {"step": 2, "train_loss": float("nan"), "val_f1": 0.3, "lr": 1e-5},
    ]
    plot_curves(history, tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as png:
        assert png.format == "PNG" and png.width > png.height
