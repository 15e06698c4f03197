"""The records a benchmark run returns: one :class:`CaseResult` per case, one report for all."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from dsifn.benchmark.accuracy import AccuracyReport

__all__ = ["BenchmarkReport", "CaseResult"]


@dataclass
class CaseResult:
    """Measurements of one case (e.g. ``train`` with the ``fast`` path)."""

    task: str  # "train", "infer" or "scene"
    path: str  # "baseline" or "fast"
    description: str  # what the path does, e.g. "eager fp32 NCHW"
    batch: int  # pairs per step
    size: int  # image side
    seconds_per_step: float  # median over rounds
    step_times: list[float]  # seconds per step of each round
    warmup_seconds: float  # time of the untimed warm-up steps (includes compilation)
    pairs_per_second: float
    megapixels_per_second: float  # pixels of one date's image per second, / 1e6
    peak_memory_bytes: int | None  # see dsifn.benchmark.hardware
    flops_per_step: int | None  # counted FLOPs of one step (forward, or forward + backward)
    tflops: float | None  # achieved: flops_per_step / seconds_per_step / 1e12
    peak_tflops: float | None  # the device's peak for this precision, if known
    peak_fraction: float | None  # tflops / peak_tflops
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchmarkReport:
    """Everything :func:`~dsifn.benchmark.run_benchmark` measured."""

    config: dict[str, Any]
    environment: dict[str, Any]
    cases: list[CaseResult]
    ratios: dict[str, float]  # task -> fast pairs/s over baseline pairs/s; scene: its own rates
    accuracy: AccuracyReport | None
    notes: list[str]
    # Runtime -> F1 on the data's test split and its drop in points against the baseline.
    agreement: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dictionary."""
        return dataclasses.asdict(self)
