"""Change-detection scores from one confusion matrix accumulated over a whole split.

Counts are summed as int64 over every valid pixel of a split (and across processes with
:meth:`ConfusionMatrix.all_reduce`), and scores are computed once from the totals: never
averaged per image or per batch, which is biased and scores an empty batch 1.0.

A pixel is predicted *changed* when its probability is strictly greater than the threshold
(``prob > threshold``, :func:`dsifn.contract.is_change`, the rule of every output), which at
0.5 is the same as ``logit > 0``. The reference must be 0/1.

Scores of the change class (:func:`scores_from_confusion`):

- precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2TP / (2TP + FP + FN),
  IoU = TP / (TP + FP + FN), OA = (TP + TN) / N, Cohen's kappa = (OA - pe) / (1 - pe) with
  pe = ((TP + FP)(TP + FN) + (FN + TN)(FP + TN)) / N**2.

Zero denominators. A ratio whose denominator is zero is 1.0 when the matrix has no error of the
kinds it measures (FP = FN = 0) and 0.0 otherwise. So a tile with no change in the reference
and nothing predicted scores precision = recall = F1 = IoU = 1.0; nothing predicted while the
reference has change scores precision 0, recall 0, F1 0; change predicted where the reference
has none scores recall 0. Kappa with pe == 1 (prediction and reference both a single class) is
1.0 if OA == 1 else 0.0. An empty matrix (N == 0, e.g. every pixel masked out) gives NaN for
every score: there is nothing to score.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch
import torch.distributed as dist
from torch import Tensor

from dsifn._validation import check_choice
from dsifn.contract import is_change
from dsifn.errors import ConfigError, DataError, InputError

__all__ = ["SCORE_NAMES", "ConfusionMatrix", "Metric", "ThresholdSweep", "scores_from_confusion"]

Metric = Literal["precision", "recall", "f1", "iou", "oa", "kappa"]
SCORE_NAMES: tuple[str, ...] = get_args(Metric)


def _ratio(numerator: int, denominator: int, perfect: bool) -> float:
    """``numerator / denominator``; 1.0 or 0.0 (``perfect`` or not) when the denominator is 0."""
    if denominator == 0:
        return 1.0 if perfect else 0.0
    return numerator / denominator


def scores_from_confusion(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    """Scores of the change class from a binary confusion matrix.

    The module docstring gives the formulas and the zero-denominator convention.

    Args:
        tp: Changed pixels predicted changed.
        fp: Unchanged pixels predicted changed.
        fn: Changed pixels predicted unchanged.
        tn: Unchanged pixels predicted unchanged.

    Returns:
        ``{"precision", "recall", "f1", "iou", "oa", "kappa"}`` as floats.

    Raises:
        InputError: If a count is negative.
    """
    tp, fp, fn, tn = (int(v) for v in (tp, fp, fn, tn))
    if min(tp, fp, fn, tn) < 0:
        raise InputError(f"confusion counts must be >= 0; got tp={tp} fp={fp} fn={fn} tn={tn}")
    n = tp + fp + fn + tn
    if n == 0:
        return dict.fromkeys(SCORE_NAMES, math.nan)
    perfect = fp == 0 and fn == 0
    # Python integers are exact, so pe == 1 is tested without rounding.
    expected = (tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)  # pe * N**2
    if expected == n * n:
        kappa = 1.0 if perfect else 0.0
    else:
        kappa = (n * (tp + tn) - expected) / (n * n - expected)
    return {
        "precision": _ratio(tp, tp + fp, perfect),
        "recall": _ratio(tp, tp + fn, perfect),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, perfect),
        "iou": _ratio(tp, tp + fp + fn, perfect),
        "oa": (tp + tn) / n,
        "kappa": kappa,
    }


def _as_maps(
    prob: Tensor, target: Tensor, valid: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check one batch and return probabilities, a bool reference and a bool mask."""
    for name, x in (("prob", prob), ("target", target)):
        if not isinstance(x, Tensor):
            raise InputError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if prob.ndim not in (3, 4) or (prob.ndim == 4 and prob.shape[1] != 1):
        raise InputError(f"prob must have shape (B, 1, H, W) or (B, H, W); got {tuple(prob.shape)}")
    if not prob.is_floating_point():
        raise InputError(f"prob must be a float tensor of probabilities; got {prob.dtype}")
    if target.shape != prob.shape:
        raise InputError(
            f"target shape {tuple(target.shape)} differs from prob shape {tuple(prob.shape)}"
        )
    if valid is not None and valid.shape != prob.shape:
        raise InputError(
            f"valid mask shape {tuple(valid.shape)} differs from prob shape {tuple(prob.shape)}"
        )
    # One host sync per batch catches logits passed as probabilities and 0/255 references.
    bad_prob = ~((prob >= 0) & (prob <= 1))  # also catches NaN
    bad_target = (target != 0) & (target != 1)
    flags = torch.stack([bad_prob.any(), bad_target.any()]).tolist()
    if flags[0]:
        raise InputError("prob must hold probabilities in [0, 1]; apply sigmoid to logits first")
    if flags[1]:
        raise InputError("target must be 0 (no change) or 1 (change); decode 0/255 masks first")
    return prob, target.bool(), None if valid is None else valid.bool()


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def _reduce_device() -> torch.device:
    """The device a collective needs: the current CUDA device for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class ConfusionMatrix:
    """Binary confusion matrix of the change class, accumulated over a split.

    Counts stay on the device of the first batch (no host sync per update) as int64.

    Example:
        >>> cm = ConfusionMatrix(threshold=0.5)
        >>> for batch in loader:
        ...     cm.update(torch.sigmoid(model(t1, t2).stride1), mask, valid)
        >>> cm.all_reduce()  # with torch.distributed
        >>> cm.scores()["f1"]
    """

    def __init__(self, threshold: float = 0.5) -> None:
        """Create an empty matrix.

        Args:
            threshold: A pixel is predicted changed when its probability is > threshold.

        Raises:
            ConfigError: If the threshold is not in [0, 1].
        """
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1]; got {threshold}")
        self.threshold = float(threshold)
        self._counts = torch.zeros(4, dtype=torch.int64)  # tp, fp, fn, tn

    def reset(self) -> None:
        """Forget every count."""
        self._counts = torch.zeros(4, dtype=torch.int64)

    def update(self, prob: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add one batch.

        Args:
            prob: (B, 1, H, W) or (B, H, W) change probabilities in [0, 1].
            target: Same shape, reference with values 0 or 1 (any dtype).
            valid: Same shape, bool mask of pixels that count, or None for all.

        Raises:
            InputError: On shapes that differ, values out of range, or integer ``prob``.
        """
        prob, ref, valid = _as_maps(prob, target, valid)
        # Compared in float64: exact for float32/16 probabilities, so that the counts agree
        # with ThresholdSweep's histogram at thresholds on its grid.
        pred = is_change(prob, self.threshold)
        if valid is None:
            valid = torch.ones_like(ref)
        tp = (pred & ref & valid).sum()
        fp = (pred & ~ref & valid).sum()
        fn = (~pred & ref & valid).sum()
        n = valid.sum()
        batch = torch.stack([tp, fp, fn, n - tp - fp - fn]).to(torch.int64)
        self._counts = self._counts.to(batch.device) + batch

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts to this one (same threshold); return self.

        Raises:
            ConfigError: If the thresholds differ.
        """
        if other.threshold != self.threshold:
            raise ConfigError(
                f"cannot merge matrices at thresholds {self.threshold} and {other.threshold}"
            )
        self._counts = self._counts + other._counts.to(self._counts.device)
        return self

    def all_reduce(self) -> None:
        """Sum the counts over all torch.distributed ranks; a no-op when not initialised."""
        if not _distributed():
            return
        device = self._counts.device
        counts = self._counts.to(_reduce_device())
        dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        self._counts = counts.to(device)

    @property
    def counts(self) -> tuple[int, int, int, int]:
        """(tp, fp, fn, tn) as Python ints."""
        tp, fp, fn, tn = self._counts.tolist()
        return tp, fp, fn, tn

    @property
    def tp(self) -> int:
        """Changed pixels predicted changed."""
        return self.counts[0]

    @property
    def fp(self) -> int:
        """Unchanged pixels predicted changed."""
        return self.counts[1]

    @property
    def fn(self) -> int:
        """Changed pixels predicted unchanged."""
        return self.counts[2]

    @property
    def tn(self) -> int:
        """Unchanged pixels predicted unchanged."""
        return self.counts[3]

    @property
    def total(self) -> int:
        """Number of valid pixels counted."""
        return sum(self.counts)

    def scores(self) -> dict[str, float]:
        """Scores of the change class; see :func:`scores_from_confusion`."""
        return scores_from_confusion(*self.counts)

    def as_dict(self) -> dict[str, float | int]:
        """Threshold, counts and scores in one flat, JSON-friendly dictionary."""
        tp, fp, fn, tn = self.counts
        return {"threshold": self.threshold, "tp": tp, "fp": fp, "fn": fn, "tn": tn} | dict(
            self.scores()
        )

    def __repr__(self) -> str:
        tp, fp, fn, tn = self.counts
        return f"ConfusionMatrix(threshold={self.threshold}, tp={tp}, fp={fp}, fn={fn}, tn={tn})"


class ThresholdSweep:
    """Histograms of the probabilities of changed and unchanged valid pixels.

    Gives the confusion matrix at every threshold ``k / bins`` (k = 0..bins) at once, to choose
    the decision threshold on a validation split. Pixel probability p falls in cell
    ``ceil(p * bins)`` (0..bins), so ``p > k / bins`` exactly when its cell is above k: the
    counts equal those of :class:`ConfusionMatrix` at that threshold (for float32 or
    lower-precision probabilities).
    """

    def __init__(self, bins: int = 1000) -> None:
        """Create empty histograms.

        Args:
            bins: Number of threshold steps in (0, 1].

        Raises:
            ConfigError: If ``bins`` < 1.
        """
        if bins < 1:
            raise ConfigError(f"bins must be at least 1; got {bins}")
        self.bins = int(bins)
        # Row 0: unchanged pixels, row 1: changed pixels; column ceil(p * bins).
        self._hist = torch.zeros(2, self.bins + 1, dtype=torch.int64)

    def reset(self) -> None:
        """Forget every count."""
        self._hist = torch.zeros(2, self.bins + 1, dtype=torch.int64)

    def update(self, prob: Tensor, target: Tensor, valid: Tensor | None = None) -> None:
        """Add one batch (arguments as :meth:`ConfusionMatrix.update`)."""
        prob, ref, valid = _as_maps(prob, target, valid)
        cell = torch.ceil(prob.double() * self.bins).to(torch.int64).flatten()
        weight = (torch.ones_like(ref) if valid is None else valid).flatten()
        ref = ref.flatten()
        hist = self._hist.to(prob.device)
        # scatter_add_ keeps exact int64 counts without a host sync (unlike bincount on GPU).
        hist[0].scatter_add_(0, cell, (weight & ~ref).to(torch.int64))
        hist[1].scatter_add_(0, cell, (weight & ref).to(torch.int64))
        self._hist = hist

    def merge(self, other: ThresholdSweep) -> ThresholdSweep:
        """Add another sweep's counts (same ``bins``); return self."""
        if other.bins != self.bins:
            raise ConfigError(f"cannot merge sweeps of {self.bins} and {other.bins} bins")
        self._hist = self._hist + other._hist.to(self._hist.device)
        return self

    def all_reduce(self) -> None:
        """Sum the histograms over all torch.distributed ranks; a no-op when not initialised."""
        if not _distributed():
            return
        device = self._hist.device
        hist = self._hist.to(_reduce_device())
        dist.all_reduce(hist, op=dist.ReduceOp.SUM)
        self._hist = hist.to(device)

    @property
    def thresholds(self) -> list[float]:
        """The thresholds swept: ``k / bins`` for k = 0..bins."""
        return [k / self.bins for k in range(self.bins + 1)]

    def confusion(self) -> list[tuple[int, int, int, int]]:
        """(tp, fp, fn, tn) at each threshold of :attr:`thresholds`."""
        neg, pos = self._hist.cpu().tolist()
        total_neg, total_pos = sum(neg), sum(pos)
        out: list[tuple[int, int, int, int]] = []
        above_neg = total_neg
        above_pos = total_pos
        for k in range(self.bins + 1):
            # Pixels predicted changed at threshold k/bins are those in cells k+1..bins.
            above_neg -= neg[k]
            above_pos -= pos[k]
            out.append((above_pos, above_neg, total_pos - above_pos, total_neg - above_neg))
        return out

    def counts_at(self, threshold: float) -> tuple[int, int, int, int]:
        """(tp, fp, fn, tn) at the grid threshold nearest ``threshold``."""
        if not 0.0 <= threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1]; got {threshold}")
        return self.confusion()[round(threshold * self.bins)]

    def best(self, metric: Metric = "f1") -> tuple[float, dict[str, float]]:
        """The threshold that maximises ``metric``, and the scores there.

        When several consecutive thresholds tie, the middle one of the first run of maxima is
        returned (the safest choice between classes that the histogram cannot tell apart).

        Args:
            metric: A key of :func:`scores_from_confusion`.

        Returns:
            ``(threshold, scores)``.

        Raises:
            ConfigError: If ``metric`` is unknown.
            DataError: If nothing was accumulated.
        """
        check_choice("metric", metric, SCORE_NAMES)
        if int(self._hist.sum()) == 0:
            raise DataError("no valid pixel was accumulated; cannot choose a threshold")
        values = [scores_from_confusion(*c)[metric] for c in self.confusion()]
        top = max(values)
        first = values.index(top)
        last = first
        while last + 1 < len(values) and values[last + 1] == top:
            last += 1
        k = (first + last) // 2
        return k / self.bins, scores_from_confusion(*self.confusion()[k])
