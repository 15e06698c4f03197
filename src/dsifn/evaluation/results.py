"""What an evaluation returns: per-image and split-level confusion counts and scores."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import Tensor

__all__ = [
    "SCORE_NAMES",
    "EvaluationResult",
    "ImageResult",
    "Prediction",
    "format_table",
    "image_f1",
]

SCORE_NAMES = ("precision", "recall", "f1", "iou", "oa", "kappa")


@dataclass(frozen=True)
class Prediction:
    """One image's inputs and prediction, handed to ``on_prediction`` callbacks (on the CPU)."""

    name: str  # the pair's name in the dataset
    image: Tensor  # (2, C, H, W) float in [0, 1]: T1 then T2
    mask: Tensor  # (1, H, W) float 0/1 reference
    valid: Tensor  # (1, H, W) bool, False where not labelled or either date has no data
    has_data: Tensor  # (1, H, W) bool, True where both dates have data
    probability: Tensor  # (1, H, W) float change probability
    prediction: Tensor  # (1, H, W) bool, probability above the threshold
    result: ImageResult  # its counts and scores, as the split's were counted


@dataclass(frozen=True)
class ImageResult:
    """Confusion counts and scores of one image."""

    name: str  # the pair's name
    tp: int  # changed pixels predicted changed
    fp: int  # unchanged pixels predicted changed
    fn: int  # changed pixels predicted unchanged
    tn: int  # unchanged pixels predicted unchanged
    scores: dict[str, float]  # precision, recall, f1, iou, oa, kappa of this image alone

    @property
    def f1(self) -> float:
        """F1 for sorting: see :func:`image_f1`."""
        return image_f1(self.tp, self.fp, self.fn)


@dataclass(frozen=True)
class EvaluationResult:
    """Scores of a whole split, from one confusion matrix over all its valid pixels."""

    scores: dict[str, float]  # precision, recall, f1, iou, oa, kappa in [0, 1]
    tp: int  # true positives (changed, predicted changed)
    fp: int  # false positives
    fn: int  # false negatives
    tn: int  # true negatives
    threshold: float  # probability above which a pixel counts as change
    images: int  # pairs evaluated
    per_image: list[ImageResult] | None = None  # one entry per pair when asked for
    nodata: int = 0  # pixels left out because a date has no data there
    ignored: int = 0  # pixels with data left out because the reference does not label them

    @property
    def pixels(self) -> int:
        """Valid pixels counted."""
        return self.tp + self.fp + self.fn + self.tn

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary for ``metrics.json``."""
        out: dict[str, Any] = {
            "scores": dict(self.scores),
            "confusion": {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn},
            "threshold": self.threshold,
            "images": self.images,
            "pixels": self.pixels,
            "left_out": {"nodata": self.nodata, "ignored": self.ignored},
        }
        if self.per_image is not None:
            out["per_image"] = [dataclasses.asdict(r) for r in self.per_image]
        return out


def image_f1(tp: int, fp: int, fn: int) -> float:
    """F1 of one image, taken as 1 when the image has no change and none was predicted.

    Used to rank images from worst to best; the split's scores never average these.
    """
    if tp + fp + fn == 0:
        return 1.0
    return 2 * tp / (2 * tp + fp + fn)


def format_table(result: EvaluationResult, title: str | None = None) -> str:
    """The metrics table printed by ``dsifn evaluate``: scores in %, counts, threshold."""
    lines = [title] if title else []
    labels = {
        "precision": "precision",
        "recall": "recall",
        "f1": "F1",
        "iou": "IoU",
        "oa": "OA",
        "kappa": "kappa",
    }
    for key, label in labels.items():
        lines.append(f"  {label:<10} {100 * result.scores[key]:7.2f} %")
    width = max(len(f"{v:,d}") for v in (result.tp, result.fp, result.fn, result.tn))
    lines += [
        "  confusion matrix (pixels)  predicted change   predicted no change",
        f"    reference change        TP {result.tp:>{width},d}     FN {result.fn:>{width},d}",
        f"    reference no change     FP {result.fp:>{width},d}     TN {result.tn:>{width},d}",
        f"  threshold  {result.threshold:.4g}    images {result.images}    "
        f"valid pixels {result.pixels:,d}",
        f"  left out   {result.nodata:,d} pixels without data in a date (nodata, alpha, mask, "
        f"NaN), {result.ignored:,d} not labelled (ignore value, NaN label)",
    ]
    return "\n".join(lines)
