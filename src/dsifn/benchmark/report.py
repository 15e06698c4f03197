"""The report for people: a text table of the cases, the counted FLOPs, ratios, accuracy cost.

The same report as JSON is :meth:`~dsifn.benchmark.results.BenchmarkReport.to_dict`.
"""

from __future__ import annotations

import math

from dsifn.benchmark.accuracy import AccuracyReport
from dsifn.benchmark.results import BenchmarkReport, CaseResult

__all__ = ["format_report"]

_RATIO_LABELS = {
    "train": "training speed-up, fast / baseline",
    "infer": "inference speed-up, fast / baseline",
    "scene_vs_raw_pixels": "scene pixels/s over the raw runner's tile pixels/s",
    "scene_tiles_vs_raw": "scene tile pixels/s (overlap counted) over the raw runner's",
    "pipeline_vs_raw_pixels": "pipeline alone (constant model), scene pixels/s over "
    "the raw runner's",
}


def format_report(report: BenchmarkReport) -> str:
    """The report as a text table with the ratios and the accuracy cost."""
    env = report.environment
    lines = [
        f"dsifn {env['dsifn']}, torch {env['torch']}, {env.get('gpu', env['cpu'])} "
        f"({env['device']}, {env['threads']} CPU threads), {env['date_utc']}",
        f"{'task':<6} {'path':<16} {'batch':>5} {'s/step':>9} {'s/pair':>8} {'pairs/s':>9} "
        f"{'Mpx/s':>8} "
        f"{'TFLOP/s':>8} {'of peak':>8} {'peak mem':>9} {'warm-up':>8}  what",
    ]
    lines += [_case_line(c) for c in report.cases]
    lines += [_flops_line(c) for c in report.cases if c.flops_per_step and c.path == "baseline"]
    lines += [f"{_ratio_label(name)}: {value:.2f}x" for name, value in report.ratios.items()]
    if report.accuracy is not None:
        lines.append(_accuracy_line(report.accuracy))
    lines += [
        f"F1 on the test split, {name}: {100 * a['f1']:.2f} % ({0.0 - a['f1_drop']:+.2f} points)"
        for name, a in report.agreement.items()
    ]
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _case_line(c: CaseResult) -> str:
    memory = None if c.peak_memory_bytes is None else c.peak_memory_bytes / 2**30
    fraction = None if c.peak_fraction is None else 100 * c.peak_fraction
    return (
        f"{c.task:<6} {c.path:<16} {c.batch:>5} {c.seconds_per_step:>9.4g} "
        f"{c.seconds_per_step / c.batch:>8.4g} {c.pairs_per_second:>9.4g} "
        f"{c.megapixels_per_second:>8.4g} "
        f"{_fmt(c.tflops, '.4g'):>8} {_fmt(fraction, '.1f') + '%':>8} "
        f"{_fmt(memory, '.2f') + 'G':>9} {c.warmup_seconds:>7.1f}s  {c.description}"
    )


def _flops_line(c: CaseResult) -> str:
    assert c.flops_per_step is not None
    return (
        f"counted FLOPs per {c.task} step of {c.batch} pairs: "
        f"{c.flops_per_step / 1e9:.1f} G ({c.flops_per_step / c.batch / 1e9:.1f} G/pair)"
    )


def _ratio_label(name: str) -> str:
    if name in _RATIO_LABELS:
        return _RATIO_LABELS[name]
    if name.startswith("infer_"):  # another inference path (dsifn.benchmark.inference)
        return f"inference speed-up, {name.removeprefix('infer_')} / baseline"
    return name


def _accuracy_line(acc: AccuracyReport) -> str:
    return (
        f"accuracy cost ({acc.precision} fast path vs fp32 eager, {acc.pairs} synthetic "
        f"{acc.size}px pairs): max |dp| {acc.max_probability_difference:.2e}, max |dlogit| "
        f"{acc.max_logit_difference:.2e}, mask agreement {100 * acc.mask_agreement:.4f}%, "
        f"F1 {acc.f1_baseline:.4f} (fp32) vs {acc.f1_fast:.4f} (fast)"
    )
