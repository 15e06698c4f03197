"""Where and how the network runs: device choice, numeric precision, autocast, runtimes."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Literal, get_args

import torch

from dsifn._validation import check_choice
from dsifn.errors import ConfigError

__all__ = [
    "Precision",
    "Runtime",
    "autocast",
    "cpu_has_fast_bf16",
    "cuda_has_fast_bf16",
    "resolve_device",
    "resolve_precision",
]

Precision = Literal["auto", "fp32", "bf16", "fp16"]
# What runs a model file: "auto" (chosen by the file) and the names of
# dsifn.inference.loading.RUNTIMES (a test keeps the two equal).
Runtime = Literal["auto", "torch", "onnxruntime", "openvino"]


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX-512 BF16).

    On CPUs without these, bf16 autocast emulates the arithmetic and is slower than fp32.
    """
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return bool(flags & {"amx_bf16", "avx512_bf16"})


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a device option into a :class:`torch.device`.

    Args:
        name: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...

    Returns:
        The device.

    Raises:
        ConfigError: If the name is not a device or CUDA is asked for and absent.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available here")
    return device


def cuda_has_fast_bf16(device: torch.device) -> bool:
    """Whether this GPU computes bf16 natively (compute capability 8.0, Ampere, and above).

    Older GPUs emulate bf16 (``torch.cuda.is_bf16_supported`` may still say yes), and fp16
    would need loss scaling and can overflow, so ``auto`` stays fp32 there.
    """
    major, _ = torch.cuda.get_device_capability(device)
    return major >= 8


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """Resolve ``"auto"`` to the fastest safe precision for ``device``.

    ``auto`` is bf16 where the hardware computes it natively (GPUs of compute capability 8.0
    and above, CPUs with AMX or AVX-512 BF16), fp32 elsewhere; never fp16, which has to be
    asked for. fp16 is accepted on CUDA only.
    """
    check_choice("precision", precision, get_args(Precision))
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if cuda_has_fast_bf16(device) else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision 'fp16' needs a CUDA device; use bf16 or fp32 on the CPU")
    return precision  # type: ignore[return-value]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """Autocast context for the resolved ``precision`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
