"""Warm-up, alternating rounds and the median round."""

from __future__ import annotations

import pytest
import torch

from dsifn.benchmark import BenchmarkConfig
from dsifn.benchmark.timing import case_result, interleaved


def test_cases_are_warmed_up_then_timed_in_alternating_rounds():
    calls: list[str] = []
    steps = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    config = BenchmarkConfig(warmup=1, rounds=2, steps=3)
    times, warm = interleaved(steps, config, torch.device("cpu"))
    # Each case warmed up once, then a round of 3 steps each, in turn, twice.
    assert "".join(calls) == "ab" + ("aaa" + "bbb") * 2
    assert {name: len(t) for name, t in times.items()} == {"a": 2, "b": 2}
    assert all(t > 0 for t in times["a"] + times["b"])
    assert set(warm) == {"a", "b"} and all(w >= 0 for w in warm.values())


def test_case_result_counts_the_median_round():
    case = case_result(
        "infer",
        "fast",
        "what it does",
        batch=4,
        size=100,
        times=[3.0, 1.0, 2.0],
        warmup=5.0,
        memory=None,
        flops=8 * 10**12,
        peak=16.0,
    )
    assert case.seconds_per_step == 2.0  # the median, not the mean or the best
    assert case.step_times == [3.0, 1.0, 2.0]
    assert case.pairs_per_second == 2.0
    assert case.megapixels_per_second == pytest.approx(4 * 100 * 100 / 2.0 / 1e6)
    assert case.tflops == pytest.approx(4.0)
    assert case.peak_fraction == pytest.approx(0.25)
    unknown = case_result(
        "scene", "raw", "", batch=1, size=16, times=[1.0], warmup=0.0, memory=None,
        flops=None, peak=None,
    )  # fmt: skip
    assert unknown.tflops is None and unknown.peak_fraction is None
