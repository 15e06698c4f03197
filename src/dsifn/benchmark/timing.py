"""Timing cases fairly: warm-up first, then alternating rounds, and the median round counts.

Every case of a task is timed in the same process, round after round in turn, so a machine
whose load changes during the run slows them all alike; the device is synchronised around
each round, so queued work is not mistaken for finished work.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Mapping

import torch

from dsifn.benchmark.config import BenchmarkConfig
from dsifn.benchmark.hardware import sync
from dsifn.benchmark.results import CaseResult
from dsifn.progress import progress_bar

__all__ = ["case_result", "interleaved", "seconds_per_step", "switching"]


def seconds_per_step(step: Callable[[], object], steps: int, device: torch.device) -> float:
    """Mean seconds of ``steps`` calls, the device synchronised before and after."""
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return (time.perf_counter() - start) / steps


def interleaved(
    steps: Mapping[str, Callable[[], object]],
    config: BenchmarkConfig,
    device: torch.device,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Warm every case up, then time them in alternating rounds.

    Returns:
        Per-case seconds per step of each round, and per-case warm-up seconds.
    """
    warm: dict[str, float] = {}
    for name, step in steps.items():
        sync(device)
        start = time.perf_counter()
        for _ in range(config.warmup):
            step()
        sync(device)
        warm[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in steps}
    bar = progress_bar(config.rounds * len(steps), "dsifn benchmark: timing", "round", leave=False)
    with bar:
        for _ in range(config.rounds):
            for name, step in steps.items():
                times[name].append(seconds_per_step(step, config.steps, device))
                bar.update()
    return times, warm


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """Let cuDNN pick algorithms by trial for the fast path only (the baseline keeps default)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def switching(step: Callable[[], object], cudnn_benchmark: bool) -> Callable[[], None]:
    """``step``, run with cuDNN's algorithm search on or off, whatever the other cases set."""

    def run() -> None:
        with _cudnn_benchmark(cudnn_benchmark):
            step()

    return run


def case_result(
    task: str,
    path: str,
    description: str,
    *,
    batch: int,
    size: int,
    times: list[float],
    warmup: float,
    memory: int | None,
    flops: int | None,
    peak: float | None,
) -> CaseResult:
    """One case's record from its round times: the median round, and the rates it gives."""
    seconds = statistics.median(times)
    tflops = None if flops is None else flops / seconds / 1e12
    return CaseResult(
        task=task,
        path=path,
        description=description,
        batch=batch,
        size=size,
        seconds_per_step=seconds,
        step_times=times,
        warmup_seconds=warmup,
        pairs_per_second=batch / seconds,
        megapixels_per_second=batch * size * size / seconds / 1e6,
        peak_memory_bytes=memory,
        flops_per_step=flops,
        tflops=tflops,
        peak_tflops=peak,
        peak_fraction=None if tflops is None or not peak else tflops / peak,
    )
