"""The inference case: named tile runners timed side by side on one batch, as dsifn predict runs.

Every path runs as ``dsifn predict`` runs a model: through a
:class:`~dsifn.inference.runner.TileRunner`, host arrays in, probabilities out. A path is a
:class:`NamedRunner`; the first in the list is the baseline the others are compared with. Today
the list holds the **baseline**, the network as the authors' code runs it (eager PyTorch,
float32, NCHW, no BatchNorm folding, no compilation), and the **fast path**, what dsifn does by
default on the device (:mod:`dsifn.inference.fast`: channels_last, bf16 autocast where the
hardware has it, BatchNorm folded, ``torch.compile`` where its start-up pays off). Another
runtime is one more :class:`NamedRunner` in the list. FLOPs are the network's forward, counted.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dsifn.benchmark.config import BenchmarkConfig
from dsifn.benchmark.hardware import device_peak_tflops, free, peak_memory_of
from dsifn.benchmark.results import CaseResult
from dsifn.benchmark.timing import case_result, interleaved, switching
from dsifn.devices import Precision
from dsifn.flops import forward_flops
from dsifn.inference.runner import TileRunner, TorchRunner

__all__ = [
    "NamedRunner",
    "inference_ratios",
    "measure_inference",
    "path_description",
    "torch_path",
]


@dataclass(frozen=True)
class NamedRunner:
    """One inference path: a runner, and what the report calls it and says it does."""

    name: str  # the case's path in the report: "baseline", "fast", ...
    runner: TileRunner
    description: str  # what the path does, e.g. "eager fp32 NCHW"
    precision: str  # the math it runs in, for the device's peak FLOP/s
    cudnn_benchmark: bool = False  # let cuDNN pick convolution algorithms by trial


def path_description(
    device: torch.device, precision: Precision, compiled: bool, *, fold: bool
) -> str:
    """What dsifn's fast path does on ``device``, e.g. ``"channels_last, bf16, BN folded"``."""
    parts = ["channels_last", precision]
    if fold:
        parts.append("BN folded")
    if compiled:
        parts.append("torch.compile")
    if device.type == "cuda":
        parts.append("cudnn.benchmark")
    return ", ".join(parts)


def torch_path(name: str, runner: TorchRunner) -> NamedRunner:
    """A :class:`~dsifn.inference.runner.TorchRunner` as a path, described by what it runs.

    A runner without the fast path runs the network as it is (``"eager fp32 NCHW"``) with
    cuDNN's default algorithms; one with it gets cuDNN's algorithm search as well.
    """
    fast = runner.fast
    if fast is None:
        return NamedRunner(name, runner, f"eager {runner.precision} NCHW", runner.precision)
    compiled = fast._forward is not fast.module
    description = path_description(runner.device, runner.precision, compiled, fold=True)
    return NamedRunner(name, runner, description, runner.precision, cudnn_benchmark=True)


def _pairs(
    batch: int, bands: int, size: int, device: torch.device, seed: int
) -> tuple[Tensor, Tensor]:
    """Normalised-looking (B, C, H, W) inputs for both dates, NCHW."""
    generator = torch.Generator().manual_seed(seed)
    t1 = torch.randn(batch, bands, size, size, generator=generator)
    t2 = torch.randn(batch, bands, size, size, generator=generator)
    return t1.to(device), t2.to(device)


def measure_inference(
    runners: Sequence[NamedRunner],
    *,
    network: nn.Module,
    config: BenchmarkConfig,
    device: torch.device,
    batch: int,
) -> list[CaseResult]:
    """Time each runner on the same batch of tiles, in alternating rounds.

    Args:
        runners: The paths, the baseline first; names must differ.
        network: The network they all run, on ``device``: its counted forward FLOPs are each
            path's FLOPs per step.
        config: Size, seed and timing lengths.
        device: Where the runners run (synchronised around each timing).
        batch: Pairs per call.

    Returns:
        One case per runner, in their order.
    """
    names = [r.name for r in runners]
    if len(set(names)) != len(names):
        raise ValueError(f"inference paths need different names; got {names}")
    bands = runners[0].runner.contract.band_count
    t1, t2 = (x.cpu().numpy() for x in _pairs(batch, bands, config.size, device, config.seed))
    steps = {
        r.name: switching(functools.partial(r.runner, t1, t2), r.cudnn_benchmark) for r in runners
    }
    times, warm = interleaved(steps, config, device)
    flops = forward_flops(network, config.size, bands=bands, batch=batch)
    results = [
        case_result(
            "infer",
            r.name,
            r.description,
            batch=batch,
            size=config.size,
            times=times[r.name],
            warmup=warm[r.name],
            memory=peak_memory_of(steps[r.name], device),
            flops=flops,
            peak=config.peak_tflops or device_peak_tflops(device, r.precision),
        )
        for r in runners
    ]
    free(device)
    return results


def inference_ratios(cases: Sequence[CaseResult]) -> dict[str, float]:
    """Each path's pairs/s over the baseline's (the first case).

    The fast path's ratio is ``"infer"``; any other path's is ``"infer_<name>"``.
    """
    baseline = cases[0]
    return {
        "infer" if case.path == "fast" else f"infer_{case.path}": case.pairs_per_second
        / baseline.pairs_per_second
        for case in cases[1:]
    }
