"""Measuring speed: the baseline and the fast path side by side, in one run.

The **baseline** runs the network as the authors' code does: eager PyTorch, float32, NCHW, no
BatchNorm folding, no compilation, Adam's plain loop. The **fast path** is what dsifn does by
default on the device. Both are timed in the same process, in alternating rounds, and the
medians are compared, so a machine whose load changes during the run slows both alike.

Reported per case: seconds per step, pairs/s and megapixels/s (pixels of one date's image),
peak memory, FLOPs counted with :class:`torch.utils.flop_counter.FlopCounterMode` (forward,
and forward + backward around a real training step), the achieved TFLOP/s and its fraction of
the device's peak. Nothing here asserts a speed: the numbers are for people
(``dsifn benchmark``, ``benchmarks/RESULTS.md``).

The package, one job per module:

- :mod:`~dsifn.benchmark.config`: what to measure (:class:`BenchmarkConfig`);
- :mod:`~dsifn.benchmark.hardware`: the machine, its peak FLOP/s, peak memory;
- :mod:`~dsifn.benchmark.timing`: warm-up, alternating rounds, medians;
- :mod:`~dsifn.benchmark.training`, :mod:`~dsifn.benchmark.inference`,
  :mod:`~dsifn.benchmark.scene`: the cases (inference times a list of named tile runners);
- :mod:`~dsifn.benchmark.accuracy`: the fast path's outputs against fp32 eager;
- :mod:`~dsifn.benchmark.results`, :mod:`~dsifn.benchmark.report`: the records, the table;
- :mod:`~dsifn.benchmark.run`: one run, case after case (:func:`run_benchmark`).
"""

from __future__ import annotations

from dsifn.benchmark.accuracy import AccuracyReport, compare_accuracy
from dsifn.benchmark.config import BenchmarkConfig
from dsifn.benchmark.hardware import PEAK_TFLOPS, device_peak_tflops
from dsifn.benchmark.report import format_report
from dsifn.benchmark.results import BenchmarkReport, CaseResult
from dsifn.benchmark.run import run_benchmark
from dsifn.benchmark.training import training_step_flops

__all__ = [
    "PEAK_TFLOPS",
    "AccuracyReport",
    "BenchmarkConfig",
    "BenchmarkReport",
    "CaseResult",
    "compare_accuracy",
    "device_peak_tflops",
    "format_report",
    "run_benchmark",
    "training_step_flops",
]
