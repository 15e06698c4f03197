"""What a training run records: per-round metrics as JSON lines and CSV, TensorBoard, curves.

Every file is rewritten whole from the run's history after each validation round, through a
temporary file and a rename, so the logs are always complete and agree with ``last.pt`` after a
resume. :func:`round_summary` is the line a run prints per round.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dsifn.io.atomic import atomic_path

__all__ = ["MetricsLog", "plot_curves", "round_summary"]


class MetricsLog:
    """Writes ``metrics.jsonl``, ``metrics.csv`` and (optionally) TensorBoard events."""

    def __init__(self, run_dir: Path, *, tensorboard: bool = True) -> None:
        """Prepare the writers; TensorBoard only when ``tensorboard`` imports."""
        self.run_dir = run_dir
        self._writer: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                self._writer = None
            else:
                self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def write(self, history: Sequence[Mapping[str, Any]]) -> None:
        """Rewrite the logs from the whole history; send the newest round to TensorBoard."""
        lines = "".join(json.dumps(_json_safe(entry)) + "\n" for entry in history)
        with atomic_path(self.run_dir / "metrics.jsonl", overwrite=True) as tmp:
            tmp.write_text(lines)
        with atomic_path(self.run_dir / "metrics.csv", overwrite=True) as tmp:
            tmp.write_text(history_csv(history))
        if self._writer is not None and history:
            latest = history[-1]
            step = int(latest.get("step", len(history)))
            for key, value in latest.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self._writer.add_scalar(key.replace("_", "/", 1), value, step)
            self._writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _json_safe(entry: Mapping[str, Any]) -> dict[str, Any]:
    """NaN and infinities are not JSON: write them as null."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in entry.items()
    }


def history_csv(history: Sequence[Mapping[str, Any]]) -> str:
    """CSV text of the history; the columns are every key seen, in order of first appearance."""
    columns: list[str] = []
    for entry in history:
        columns.extend(k for k in entry if k not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for entry in history:
        writer.writerow({k: entry.get(k, "") for k in columns})
    return out.getvalue()


def plot_curves(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Draw loss, F1, IoU and learning rate against the step, as a PNG.

    Args:
        history: Per-round dictionaries with ``step`` and any of ``train_loss``, ``val_loss``,
            ``train_f1``, ``val_f1``, ``val_iou``, ``lr``.
        path: The PNG to write (replaced atomically).
    """
    # A bare Figure renders with Agg and leaves pyplot's global backend alone.
    from matplotlib.figure import Figure

    steps = [float(e.get("step", i + 1)) for i, e in enumerate(history)]
    panels = (
        ("loss", ("train_loss", "val_loss"), False),
        ("F1", ("train_f1", "val_f1"), False),
        ("IoU", ("val_iou",), False),
        ("learning rate", ("lr",), True),
    )
    fig = Figure(figsize=(4 * len(panels), 3.2))
    # Fixed margins: tight_layout would draw the figure twice, and this runs every epoch.
    fig.subplots_adjust(left=0.05, right=0.99, bottom=0.16, top=0.9, wspace=0.3)
    axes = fig.subplots(1, len(panels))
    for ax, (title, keys, log_scale) in zip(axes, panels, strict=True):
        for key in keys:
            points = [
                (s, float(e[key]))
                for s, e in zip(steps, history, strict=True)
                if isinstance(e.get(key), (int, float)) and math.isfinite(float(e[key]))
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", markersize=3, label=key.replace("_", " "))
        ax.set_title(title)
        ax.set_xlabel("optimiser step")
        if log_scale and any(float(e.get("lr", 0) or 0) > 0 for e in history):
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    with atomic_path(path, overwrite=True) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def round_summary(entry: Mapping[str, Any], epochs: int) -> str:
    """The line a run prints after a validation round, from its history entry."""
    text = (
        f"epoch {entry['epoch']}/{epochs} step {entry['step']}: "
        f"train loss {entry['train_loss']:.4f} F1 {entry['train_f1']:.3f} | "
        f"val loss {entry['val_loss']:.4f} F1 {entry['val_f1']:.3f} "
        f"IoU {entry['val_iou']:.3f} | lr {entry['lr']:.2e} | best F1 {entry['best_f1']:.3f}"
    )
    if entry.get("stop_reason"):
        text += f" | stop: {entry['stop_reason']}"
    return text
