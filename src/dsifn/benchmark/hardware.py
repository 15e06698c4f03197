"""The machine under test: its description for the record, its peak FLOP/s, its peak memory.

Peak memory is ``torch.cuda.max_memory_allocated`` on CUDA and, on a CPU, the process's peak
resident set size (Linux ``VmHWM``), which also holds whatever else the process keeps, such as
the other cases' models.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dsifn._version import __version__

__all__ = [
    "PEAK_TFLOPS",
    "device_peak_tflops",
    "environment",
    "free",
    "peak_memory",
    "peak_memory_of",
    "reset_peak_memory",
    "sync",
]

# Dense (no sparsity) peak TFLOP/s by device-name substring and math mode. Sources: NVIDIA H100
# Tensor Core GPU datasheet (SXM5: bf16/fp16 989.4, tf32 494.7, fp32 66.9; PCIe: 756.5, 378,
# 51.2), H200 datasheet (the same compute as H100 SXM), A100 datasheet (312, 156, 19.5). The
# sparse figures NVIDIA headlines are twice these. First match wins, so "PCIe" precedes "H100".
PEAK_TFLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bf16": 756.5, "fp16": 756.5, "tf32": 378.0, "fp32": 51.2}),
    ("H100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("H200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 66.9}),
    ("A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5}),
)


def device_peak_tflops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak TFLOP/s for ``precision``, or None when not in the table.

    On CUDA, ``"fp32"`` means what the convolutions actually use: TF32 when cuDNN is allowed
    it (PyTorch's default), since convolutions are nearly all of DSIFN's FLOPs.

    Args:
        device: The device.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.

    Returns:
        Peak TFLOP/s, or None (CPUs and unlisted GPUs; give ``BenchmarkConfig.peak_tflops``).
    """
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = precision
    if precision == "fp32" and torch.backends.cudnn.allow_tf32:
        key = "tf32"
    for pattern, peaks in PEAK_TFLOPS:
        if pattern.lower() in name.lower():
            return peaks.get(key)
    return None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware, for the record."""
    from dsifn.devices import cpu_has_fast_bf16

    env: dict[str, Any] = {
        "dsifn": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "cpu": _cpu_name(),
        "cpu_capability": _cpu_capability(),
        "cpu_fast_bf16": cpu_has_fast_bf16(),
        "threads": torch.get_num_threads(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),  # type: ignore[no-untyped-call]
        )
    return env


def _cpu_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # older torch
        return "unknown"


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing to wait for on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    """Hand cached, unused device memory back, so the next case starts from a clean pool."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement at the memory in use now."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: writing 5 resets the peak resident set size (VmHWM) to the current one.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory(device: torch.device) -> int | None:
    """Peak bytes since :func:`reset_peak_memory`, or None where the system does not say."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def peak_memory_of(step: Callable[[], object], device: torch.device) -> int | None:
    """Peak bytes while one call of ``step`` runs."""
    sync(device)
    reset_peak_memory(device)
    step()
    sync(device)
    return peak_memory(device)
