"""The accuracy comparison: it sees a known difference, its absence, and NaNs."""

from __future__ import annotations

import math

import pytest
import torch

from dsifn.benchmark import compare_accuracy
from dsifn.inference.fast import optimize_for_inference
from dsifn.models import DSIFN


def test_compare_accuracy_sees_a_difference_and_its_absence():
    torch.manual_seed(0)
    model = DSIFN().eval()
    fast, _ = optimize_for_inference(model, device="cpu", precision="fp32")
    same = compare_accuracy(model, fast, pairs=2, size=32)
    assert same.max_probability_difference < 1e-5
    assert same.mask_agreement == 1.0
    assert same.f1_fast == same.f1_baseline

    def shifted(t1, t2):  # a "fast path" that is wrong by a known amount on every logit
        out = fast(t1, t2)
        return type(out)(*(o + 2.0 for o in out))

    # Batched, the last batch filled up with repeats that do not count.
    batched = compare_accuracy(model, fast, pairs=3, size=32, batch=2)
    assert batched.pairs == 3 and batched.mask_agreement == 1.0
    assert batched.max_probability_difference < 1e-5

    off = compare_accuracy(model, shifted, pairs=2, size=32)
    assert off.max_logit_difference == pytest.approx(2.0, abs=1e-4)
    assert off.max_probability_difference > 0.1
    assert off.mask_agreement < 1.0


def test_compare_accuracy_reports_nan_outputs():
    torch.manual_seed(0)
    model = DSIFN().eval()
    fast, _ = optimize_for_inference(model, device="cpu", precision="fp32")

    def broken(t1, t2):  # a compiled path that went wrong on one output only
        out = fast(t1, t2)
        return out._replace(stride4=torch.full_like(out.stride4, float("nan")))

    report = compare_accuracy(model, broken, pairs=1, size=32)
    assert math.isnan(report.max_logit_difference)
