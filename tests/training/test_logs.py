"""The run's log files: metrics as JSON lines and CSV, curves, the per-round line."""

from __future__ import annotations

import json

from PIL import Image

from dsifn.training.logs import MetricsLog, history_csv, plot_curves, round_summary


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


def test_round_summary_gives_the_round_and_the_stop_reason():
    entry = {
        "epoch": 2,
        "step": 8,
        "train_loss": 0.5,
        "train_f1": 0.25,
        "val_loss": 0.75,
        "val_f1": 0.5,
        "val_iou": 0.125,
        "lr": 1e-4,
        "best_f1": 0.5,
    }
    assert round_summary(entry, 10) == (
        "epoch 2/10 step 8: train loss 0.5000 F1 0.250 | val loss 0.7500 F1 0.500 "
        "IoU 0.125 | lr 1.00e-04 | best F1 0.500"
    )
    assert round_summary({**entry, "stop_reason": "max_steps"}, 10).endswith(" | stop: max_steps")
