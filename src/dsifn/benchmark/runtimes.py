"""The runtimes a benchmark puts side by side: each one model, exported and loaded as a runner.

``eager`` is the baseline (the network as the authors' code runs it: eager PyTorch, float32,
NCHW); ``fast`` is what ``dsifn predict`` runs by default on torch; ``openvino`` and
``onnxruntime`` run the model exported as ``dsifn export`` writes it, and their ``-int8``
forms run it quantised as ``dsifn export --int8`` does, calibrated on the benchmark's data
(:attr:`~dsifn.benchmark.config.BenchmarkConfig.data`, else a synthetic dataset written for
the run). Every runtime is loaded through :func:`dsifn.inference.loading.load_runner`, the
loader ``dsifn predict`` and ``dsifn evaluate`` use.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import torch

from dsifn.benchmark.config import BenchmarkConfig
from dsifn.benchmark.inference import NamedRunner, torch_path
from dsifn.devices import Precision
from dsifn.inference.loading import load_runner
from dsifn.inference.runner import TorchRunner
from dsifn.interop.quantize import Calibration
from dsifn.models.registry import ChangeNetwork

__all__ = ["build_runners", "fast_runner"]


def fast_runner(
    model: ChangeNetwork, config: BenchmarkConfig, device: torch.device, precision: Precision
) -> TorchRunner:
    """The torch fast path as dsifn predict runs it; compiled by default on CUDA only."""
    compiled = device.type == "cuda" if config.compile is None else config.compile
    return TorchRunner(
        copy.deepcopy(model), device=str(device), precision=precision, compile=compiled
    )


def build_runners(
    model: ChangeNetwork,
    config: BenchmarkConfig,
    device: torch.device,
    fast: TorchRunner,
    workdir: Path,
) -> list[NamedRunner]:
    """The runners of ``config.runtimes``, the eager baseline first.

    Exported models are written into ``workdir``; each is exported once, its int8 form
    quantised from the fp32 export.
    """
    exports = _Exports(model, config, workdir)
    runners = []
    for name in config.runtimes:
        if name == "eager":
            eager = TorchRunner(
                copy.deepcopy(model), device=str(device), precision="fp32", fast=False
            )
            runners.append(torch_path("baseline", eager))
        elif name == "fast":
            runners.append(torch_path("fast", fast))
        else:
            path = exports.model_file(name)
            runner = load_runner(path, device=str(device), precision=config.precision)
            runs_in = getattr(runner, "compute_precision", None)  # OpenVINO's
            description = _describe(name) + (f", rest in {runs_in}" if runs_in else "")
            precision = "int8" if name.endswith("-int8") else runs_in or "fp32"
            runners.append(NamedRunner(name, runner, description, precision))
    return runners


def _describe(name: str) -> str:
    runtime, _, int8 = name.partition("-")
    what = {"openvino": "OpenVINO IR", "onnxruntime": "ONNX on onnxruntime"}[runtime]
    if int8:
        method = "NNCF post-training" if runtime == "openvino" else "static QDQ, per-channel"
        return f"{what}, int8 ({method})"
    return f"{what}, fp32"


class _Exports:
    """The model's exports for one benchmark run, written on first use."""

    def __init__(self, model: ChangeNetwork, config: BenchmarkConfig, workdir: Path) -> None:
        self.model = model
        self.config = config
        self.workdir = workdir
        self._calibration: Calibration | None = None

    def model_file(self, name: str) -> Path:
        """The file runtime ``name`` runs (``openvino-int8``: the int8 IR, and so on)."""
        runtime, _, int8 = name.partition("-")
        suffix = ".xml" if runtime == "openvino" else ".onnx"
        fp32 = self.workdir / f"fp32{suffix}"
        if not fp32.is_file():
            _exporter(runtime)(copy.deepcopy(self.model), fp32)
        if not int8:
            return fp32
        quantized = self.workdir / f"int8{suffix}"
        if not quantized.is_file():
            _quantizer(runtime)(fp32, quantized, calibration=self.calibration())
        return quantized

    def calibration(self) -> Calibration:
        """The benchmark's data, else a synthetic dataset, as calibration tiles."""
        if self._calibration is None:
            data = self.config.data or os.fspath(self._synthetic_data())
            pairs = self.config.calibration_pairs
            # A benchmark reports what int8 costs (its F1 agreement) rather than refusing it.
            self._calibration = Calibration(data=data, pairs=pairs, max_f1_drop=100.0)
        return self._calibration

    def _synthetic_data(self) -> Path:
        from dsifn.data.synthetic import SyntheticConfig, write_synthetic_dataset

        pairs = self.config.calibration_pairs
        synthetic = SyntheticConfig(
            size=self.config.size, train=1, val=pairs + max(1, pairs // 4), test=1
        )
        return write_synthetic_dataset(
            self.workdir / "calibration", synthetic, seed=self.config.seed, progress=False
        )


def _exporter(runtime: str) -> Callable[[ChangeNetwork, Path], Path]:
    if runtime == "openvino":
        from dsifn.interop.openvino import export_openvino

        return export_openvino
    from dsifn.interop.onnx import export_onnx

    return export_onnx


def _quantizer(runtime: str) -> Callable[..., Path]:
    if runtime == "openvino":
        from dsifn.interop.openvino import quantize_openvino

        return quantize_openvino
    from dsifn.interop.onnx import quantize_onnx

    return quantize_onnx
