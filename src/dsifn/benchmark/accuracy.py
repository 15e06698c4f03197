"""The accuracy cost of a fast path: its outputs against the fp32 eager model's on fixed pairs."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dsifn.models.dsifn import DSIFNOutput
from dsifn.models.outputs import ChangeOutput
from dsifn.models.registry import ChangeNetwork

__all__ = ["AccuracyReport", "compare_accuracy"]

# One synthetic pair as the model takes it: t1, t2 as (C, H, W), the reference label as (H, W).
_Sample = tuple[Tensor, Tensor, Tensor]


@dataclass
class AccuracyReport:
    """How far the fast path's outputs are from the fp32 baseline's on fixed inputs."""

    pairs: int  # synthetic pairs compared
    size: int  # their side
    precision: str  # of the fast path
    max_probability_difference: float  # max |p_fast - p_fp32| over all pixels, stride-1 map
    max_logit_difference: float  # the same for logits, over all five outputs
    mask_agreement: float  # fraction of pixels whose thresholded decision is the same
    f1_baseline: float  # F1 of the baseline against the synthetic reference
    f1_fast: float  # F1 of the fast path against the same reference
    threshold: float  # decision threshold used


def compare_accuracy(
    model: ChangeNetwork,
    fast: Callable[[Tensor, Tensor], Any],
    *,
    pairs: int = 8,
    size: int = 64,
    batch: int = 1,
    threshold: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> AccuracyReport:
    """Compare a fast path with the fp32 eager model on fixed synthetic pairs.

    The pairs come from :func:`dsifn.data.synthetic.generate_pair` (seeded), scaled to [0, 1]
    and normalised with the model's normalisation; bands are repeated cyclically when the model
    does not take 3. They go through in batches of ``batch``, the last one filled up with
    repeats (not counted), so a compiled fast path sees the one shape it was compiled for.

    Args:
        model: The network (evaluated in eval mode, float32, on ``device``; not modified).
        fast: The fast path: ``fast(t1, t2)`` returns five logit maps, finest first.
        pairs: Number of pairs.
        size: Their side.
        batch: Pairs per call.
        threshold: Decision threshold for the masks and F1.
        seed: Seed of the pairs.
        device: Where the baseline runs (and where inputs are made).

    Returns:
        The differences and both F1 scores against the synthetic reference.
    """
    dev = device if isinstance(device, torch.device) else torch.device(device)
    baseline = copy.deepcopy(model).to(dev).eval()
    comparison = _Comparison(threshold)
    for count, t1, t2, label in _batches(_samples(model, pairs, size, seed), batch, dev):
        with torch.inference_mode():
            ref = baseline(t1, t2)
        comparison.add(ref, fast(t1, t2), label, count)
    precision = getattr(fast, "precision", "unknown")
    return comparison.report(pairs=pairs, size=size, precision=str(precision))


def _samples(model: ChangeNetwork, pairs: int, size: int, seed: int) -> list[_Sample]:
    """``pairs`` seeded synthetic pairs, scaled, band-matched and normalised for ``model``."""
    from dsifn.data.synthetic import SyntheticConfig, generate_pair

    bands = model.config.in_channels
    normalize = model.config.input_normalization
    synthetic = SyntheticConfig(size=size)
    samples = []
    for i in range(pairs):
        pair = generate_pair(synthetic, (seed, i))
        images = []
        for image in (pair.t1, pair.t2):
            x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)
            images.append(normalize(x[torch.arange(bands) % x.shape[0]]))
        samples.append((images[0], images[1], torch.from_numpy(pair.label.astype(np.int64))))
    return samples


def _batches(
    samples: list[_Sample], batch: int, device: torch.device
) -> Iterator[tuple[int, Tensor, Tensor, Tensor]]:
    """Batches of ``batch`` pairs on ``device``, the last filled up with repeats.

    Yields:
        The number of real pairs, then t1, t2 as (batch, C, H, W) and labels as (batch, H, W).
    """
    for first in range(0, len(samples), batch):
        chunk = samples[first : first + batch]
        count = len(chunk)
        chunk += [chunk[-1]] * (batch - count)
        t1, t2, label = (torch.stack(parts).to(device) for parts in zip(*chunk, strict=True))
        yield count, t1, t2, label


def _worst(a: float, b: float) -> float:
    """The larger difference, NaN if either is NaN (``max`` would drop a NaN silently)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


class _Comparison:
    """The running differences, agreement and confusion matrices of the two paths' outputs."""

    def __init__(self, threshold: float) -> None:
        from dsifn.metrics import ConfusionMatrix

        self.threshold = threshold
        self.baseline, self.fast = ConfusionMatrix(threshold), ConfusionMatrix(threshold)
        self.max_probability = self.max_logit = 0.0
        self.agree = self.total = 0

    def add(self, ref: DSIFNOutput | ChangeOutput, out: Any, label: Tensor, count: int) -> None:
        """Count the first ``count`` pairs of a batch: the baseline's ``ref``, the fast ``out``."""
        for a, b in zip(ref, out, strict=True):
            diff = (a[:count].float() - b[:count].float().to(a.device)).abs().max().item()
            self.max_logit = _worst(self.max_logit, diff)
        p_ref = torch.sigmoid(ref.stride1[:count].float())
        p_fast = torch.sigmoid(out.stride1[:count].float().to(p_ref.device))
        difference = (p_ref - p_fast).abs().max().item()
        self.max_probability = _worst(self.max_probability, difference)
        threshold = self.threshold
        self.agree += int(((p_ref > threshold) == (p_fast > threshold)).sum().item())
        self.total += p_ref.numel()
        self.baseline.update(p_ref, label[:count, None])
        self.fast.update(p_fast, label[:count, None])

    def report(self, *, pairs: int, size: int, precision: str) -> AccuracyReport:
        """What was counted, as the report."""
        return AccuracyReport(
            pairs=pairs,
            size=size,
            precision=precision,
            max_probability_difference=self.max_probability,
            max_logit_difference=self.max_logit,
            mask_agreement=self.agree / self.total if self.total else math.nan,
            f1_baseline=float(self.baseline.scores()["f1"]),
            f1_fast=float(self.fast.scores()["f1"]),
            threshold=self.threshold,
        )
