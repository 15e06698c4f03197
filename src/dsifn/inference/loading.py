"""Model files to runners: one table of runtimes, chosen by the file or by name.

:func:`load_runner` is the one place where a model file becomes a
:class:`~dsifn.inference.runner.TileRunner`: each runtime is an entry of :data:`RUNTIMES`,
chosen by the file it is given (``.onnx``: onnxruntime; ``.xml``: openvino; anything else: a
dsifn checkpoint on torch) or by name. The exported runtimes are imported when first used, so
their extras are needed only then.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import get_args

from dsifn._validation import check_choice
from dsifn.devices import Runtime
from dsifn.errors import ConfigError, InputError
from dsifn.inference.runner import TileRunner, TorchRunner

__all__ = ["MODEL_SUFFIXES", "RUNTIMES", "Runtime", "load_runner", "runtime_for"]


def _torch_runner(path: Path, device: str, precision: str) -> TileRunner:
    from dsifn.models.checkpoint import load_checkpoint

    runner = TorchRunner(load_checkpoint(path), device=device, precision=precision)
    runner.path = str(path)
    return runner


def _onnx_runner(path: Path, device: str, precision: str) -> TileRunner:
    from dsifn.interop.onnx import OnnxRunner  # it says which extra is missing, if one is

    if precision not in ("auto", "fp32"):
        raise ConfigError(f"an ONNX model runs in the precision it was exported in: {precision}")
    runner: TileRunner = OnnxRunner(path, device=device)
    return runner


def _openvino_runner(path: Path, device: str, precision: str) -> TileRunner:
    from dsifn.interop.openvino import OpenVINORunner  # it says which extra is missing

    runner: TileRunner = OpenVINORunner(path, device=device, precision=precision)
    return runner


# Each runtime: (path, device, precision) -> runner. The next runtime is one entry here.
RUNTIMES: dict[str, Callable[[Path, str, str], TileRunner]] = {
    "torch": _torch_runner,
    "onnxruntime": _onnx_runner,
    "openvino": _openvino_runner,
}
# Model files each runtime is chosen for by default (anything else: torch).
MODEL_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino"}


def runtime_for(path: str | os.PathLike[str], runtime: str = "auto") -> str:
    """The runtime that runs ``path``: the one asked for, else the one its suffix says."""
    check_choice("runtime", runtime, get_args(Runtime))
    if runtime != "auto":
        return runtime
    return MODEL_SUFFIXES.get(Path(path).suffix.lower(), "torch")


def load_runner(
    path: str | os.PathLike[str],
    *,
    runtime: str = "auto",
    device: str = "auto",
    precision: str = "auto",
) -> TileRunner:
    """Load a model file as a :class:`TileRunner`.

    Args:
        path: A dsifn checkpoint, an exported ``.onnx`` model or an OpenVINO ``.xml``.
        runtime: ``"auto"`` (by the file: :data:`MODEL_SUFFIXES`) or a name of :data:`RUNTIMES`.
        device: Where to run.
        precision: Numeric precision (torch; OpenVINO, for what int8 does not cover; ONNX
            models run as exported).

    Returns:
        The runner.

    Raises:
        ConfigError: If the runtime is unknown or its optional dependencies are missing.
        CheckpointError: If the checkpoint cannot be read.
    """
    file = Path(path)
    if file.is_dir():
        raise InputError(f"model {file} is a folder, not a model file")
    if not file.is_file():
        raise InputError(f"model {file} does not exist")
    return RUNTIMES[runtime_for(file, runtime)](file, device, precision)
