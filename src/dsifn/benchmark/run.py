"""One benchmark run: the cases ``BenchmarkConfig.mode`` asks for, in order, into one report."""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path

import torch

from dsifn.benchmark.accuracy import AccuracyReport, compare_accuracy
from dsifn.benchmark.agreement import f1_agreement
from dsifn.benchmark.config import BenchmarkConfig
from dsifn.benchmark.hardware import environment
from dsifn.benchmark.inference import inference_ratios, measure_inference
from dsifn.benchmark.results import BenchmarkReport, CaseResult
from dsifn.benchmark.runtimes import build_runners, fast_runner
from dsifn.benchmark.scene import measure_scene
from dsifn.benchmark.training import measure_training
from dsifn.contract import InputContract
from dsifn.devices import resolve_device, resolve_precision
from dsifn.inference.runner import TorchRunner
from dsifn.models.dsifn import DSIFN
from dsifn.models.registry import ChangeNetwork

__all__ = ["run_benchmark"]


def run_benchmark(config: BenchmarkConfig) -> BenchmarkReport:
    """Measure the baseline and the fast path as ``config`` asks.

    Training first, then inference, then the scene, then the accuracy comparison: each case
    times its paths in alternating rounds (:mod:`dsifn.benchmark.timing`).

    Args:
        config: What to measure.

    Returns:
        The report (see :func:`~dsifn.benchmark.format_report`).
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    batch = config.batch or (16 if device.type == "cuda" else 2)
    infer_batch = config.infer_batch or 2 * batch
    model = _load_model(config)
    notes: list[str] = []
    if device.type == "cpu" and precision == "fp32" and config.precision == "auto":
        notes.append(
            "this CPU has no native bf16 (AMX / AVX-512 BF16), so the fast path stays fp32"
        )
    cases: list[CaseResult] = []
    ratios: dict[str, float] = {}
    if config.mode in ("train", "all"):
        # Compiled training only when asked for, as in dsifn train (dsifn.training.step: why).
        train = measure_training(model, config, device, precision, bool(config.compile), batch)
        cases += train
        ratios["train"] = train[1].pairs_per_second / train[0].pairs_per_second
        notes += _training_notes(train)
    fast: TorchRunner | None = None
    agreement: dict[str, dict[str, float]] = {}
    if config.mode in ("infer", "all") or config.accuracy_pairs:
        fast = fast_runner(model, config, device, precision)
    if config.mode in ("infer", "all"):
        assert fast is not None
        infer, agreement = _measure_inference(model, fast, config, device, infer_batch)
        cases += infer
        ratios.update(inference_ratios(infer))
    if config.mode in ("scene", "all"):
        scene, scene_ratios = measure_scene(model, config, device, precision, infer_batch)
        cases += scene
        ratios.update(scene_ratios)
    accuracy = None
    if config.accuracy_pairs and fast is not None and fast.fast is not None:
        accuracy = _compare_accuracy(model, fast, config, device, infer_batch)
        if not math.isfinite(accuracy.max_logit_difference):
            notes.append(
                "the fast path's outputs are not finite: its inference speed does not count"
            )
    return BenchmarkReport(
        config=dataclasses.asdict(config) | {"batch": batch, "infer_batch": infer_batch},
        environment=environment(device),
        cases=cases,
        ratios=ratios,
        accuracy=accuracy,
        notes=notes,
        agreement=agreement,
    )


def _load_model(config: BenchmarkConfig) -> ChangeNetwork:
    torch.manual_seed(config.seed)
    if config.checkpoint is None:
        return DSIFN()
    from dsifn.models.checkpoint import load_checkpoint

    return load_checkpoint(config.checkpoint)


def _training_notes(cases: list[CaseResult]) -> list[str]:
    """A note for each training path whose losses or gradients were not finite."""
    notes = []
    for case in cases:
        if case.extra.get("nonfinite_losses") or case.extra.get("nonfinite_grad_count"):
            notes.append(
                f"training {case.path} path: {case.extra['nonfinite_losses']} of "
                f"{case.extra['steps']} losses and {case.extra['nonfinite_grad_count']} "
                f"gradients not finite (e.g. {case.extra['nonfinite_grads'][:3]}): its "
                "speed does not count"
            )
    return notes


def _measure_inference(
    model: ChangeNetwork,
    fast: TorchRunner,
    config: BenchmarkConfig,
    device: torch.device,
    batch: int,
) -> tuple[list[CaseResult], dict[str, dict[str, float]]]:
    """Time the runtimes side by side; their F1 agreement when a trained model and data are given.

    The eager fp32 NCHW network is the baseline; exported runtimes are written to a temporary
    folder for the run (:mod:`dsifn.benchmark.runtimes`).
    """
    with tempfile.TemporaryDirectory(prefix="dsifn-benchmark-") as workdir:
        runners = build_runners(model, config, device, fast, Path(workdir))
        baseline = runners[0].runner
        assert isinstance(baseline, TorchRunner)
        cases = measure_inference(
            runners, network=baseline.model, config=config, device=device, batch=batch
        )
        agreement = {}
        if config.checkpoint is not None and config.data is not None:
            agreement = f1_agreement(runners, config.data)
    return cases, agreement


def _compare_accuracy(
    model: ChangeNetwork,
    fast: TorchRunner,
    config: BenchmarkConfig,
    device: torch.device,
    batch: int,
) -> AccuracyReport:
    """The fast path's accuracy cost, at the timed batch shape (so no recompilation)."""
    assert fast.fast is not None
    return compare_accuracy(
        model,
        fast.fast,
        pairs=config.accuracy_pairs,
        size=config.size,
        batch=batch,
        threshold=InputContract.of(model).threshold,
        seed=config.seed,
        device=device,
    )
