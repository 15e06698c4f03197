"""Measuring speed: the baseline and the fast path side by side, in one run.

The **baseline** runs the network as the authors' code does: eager PyTorch, float32, NCHW, no
BatchNorm folding, no compilation, Adam's plain loop. The **fast path** is what dsifn does by
default on the device. For inference (:mod:`dsifn.inference.fast`): channels_last, bf16 autocast
where the hardware has it, BatchNorm folded, ``torch.compile`` where its start-up pays off. For
training, both paths are the :class:`~dsifn.training.step.TrainStep` that ``dsifn train``
runs, the fast one with ``dsifn train``'s defaults (layout, precision, fused Adam on CUDA;
compiled only with ``--compile``, as ``run.compile``). Both are timed in the same
process, in alternating rounds, and the medians are compared, so a machine whose load changes
during the run slows both alike.

Reported per case: seconds per step, pairs/s and megapixels/s (pixels of one date's image),
peak memory (CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak resident set
size, which also holds the other case's model), FLOPs counted with
:class:`torch.utils.flop_counter.FlopCounterMode` (forward, and forward + backward around a real
training step), the achieved TFLOP/s and its fraction of the device's peak.

Nothing here asserts a speed: the numbers are for people (``dsifn benchmark``,
``benchmarks/RESULTS.md``).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from dsifn._validation import check_choice
from dsifn._version import __version__
from dsifn.devices import Precision, resolve_device, resolve_precision
from dsifn.errors import ConfigError
from dsifn.flops import forward_flops
from dsifn.inference.runner import TorchRunner
from dsifn.losses import DeepSupervisionLoss
from dsifn.models.dsifn import DSIFN
from dsifn.progress import progress_bar
from dsifn.training.step import TrainStep

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

Mode = Literal["train", "infer", "scene", "all"]

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
        Peak TFLOP/s, or None (CPUs and unlisted GPUs; pass ``--peak-tflops``).
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


@dataclass(frozen=True)
class BenchmarkConfig:
    """What :func:`run_benchmark` measures, and how long."""

    device: str = "auto"  # auto, cpu, cuda or cuda:N
    size: int = 256  # side of each image (and of the scene's tiles)
    batch: int | None = None  # training pairs per step; None: 16 on CUDA, 2 on a CPU
    infer_batch: int | None = None  # inference pairs per call; None: twice `batch`
    mode: Mode = "all"  # what to measure: train, infer, scene or all
    steps: int = 5  # timed steps per round and case
    warmup: int = 2  # untimed steps per case before timing (compilation happens here)
    rounds: int = 3  # alternating rounds of baseline and fast; the median round counts
    precision: str = "auto"  # fast path precision; fp32 opts out of autocast
    compile: bool | None = None  # torch.compile the fast path; None: inference on CUDA only
    peak_tflops: float | None = None  # device peak for the fast path; None: from the table
    scene_size: int = 2048  # side of the generated scene (scene mode)
    accuracy_pairs: int = 8  # synthetic pairs for the accuracy comparison; 0 skips it
    checkpoint: str | None = None  # benchmark this checkpoint's model; None: a random init
    seed: int = 0  # seeds weights and inputs

    def __post_init__(self) -> None:
        """Check values."""
        check_choice("mode", self.mode, get_args(Mode))
        if self.size < 16:
            raise ConfigError(f"size must be at least 16; got {self.size}")
        for name in ("batch", "infer_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1; got {value}")
        if self.steps < 1 or self.rounds < 1 or self.warmup < 0:
            raise ConfigError("steps and rounds must be at least 1, warmup at least 0")
        if self.scene_size < self.size:
            raise ConfigError(f"scene_size must be at least size ({self.size})")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ConfigError(f"peak_tflops must be positive; got {self.peak_tflops}")
        if self.accuracy_pairs < 0:
            raise ConfigError("accuracy_pairs must not be negative")


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
    peak_memory_bytes: int | None  # see the module docstring
    flops_per_step: int | None  # counted FLOPs of one step (forward, or forward + backward)
    tflops: float | None  # achieved: flops_per_step / seconds_per_step / 1e12
    peak_tflops: float | None  # the device's peak for this precision, if known
    peak_fraction: float | None  # tflops / peak_tflops
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AccuracyReport:
    """How far the fast path's outputs are from the fp32 baseline's on fixed inputs."""

    pairs: int  # synthetic pairs compared
    size: int  # their side
    precision: str  # of the fast path
    max_probability_difference: float  # max |p_fast - p_fp32| over all pixels, stride-1 map
    max_logit_difference: float  # the same for logits, over all five outputs
    mask_agreement: float  # fraction of pixels whose thresholded decision is the same
    f1_baseline: float  # F1 of the baseline against the synthetic reference
    f1_fast: float  # F1 of the fast path against the same reference
    threshold: float  # decision threshold used


@dataclass
class BenchmarkReport:
    """Everything :func:`run_benchmark` measured."""

    config: dict[str, Any]
    environment: dict[str, Any]
    cases: list[CaseResult]
    ratios: dict[str, float]  # task -> fast pairs/s over baseline pairs/s (scene: see below)
    accuracy: AccuracyReport | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready dictionary."""
        return dataclasses.asdict(self)


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


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    # Linux: writing 5 resets the peak resident set size (VmHWM) to the current one.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _peak_memory(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return None


def _seconds_per_step(step: Callable[[], object], steps: int, device: torch.device) -> float:
    """Mean seconds of ``steps`` calls, the device synchronised before and after."""
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def _interleaved(
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
        _sync(device)
        start = time.perf_counter()
        for _ in range(config.warmup):
            step()
        _sync(device)
        warm[name] = time.perf_counter() - start
    times: dict[str, list[float]] = {name: [] for name in steps}
    bar = progress_bar(config.rounds * len(steps), "dsifn benchmark: timing", "round", leave=False)
    with bar:
        for _ in range(config.rounds):
            for name, step in steps.items():
                times[name].append(_seconds_per_step(step, config.steps, device))
                bar.update()
    return times, warm


def _peak_of(step: Callable[[], object], device: torch.device) -> int | None:
    _sync(device)
    _reset_peak_memory(device)
    step()
    _sync(device)
    return _peak_memory(device)


def _case(
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


def _pairs(
    batch: int, bands: int, size: int, device: torch.device, seed: int
) -> tuple[Tensor, Tensor]:
    """Normalised-looking (B, C, H, W) inputs for both dates, NCHW."""
    generator = torch.Generator().manual_seed(seed)
    t1 = torch.randn(batch, bands, size, size, generator=generator)
    t2 = torch.randn(batch, bands, size, size, generator=generator)
    return t1.to(device), t2.to(device)


def _train_batch(
    batch: int, bands: int, size: int, device: torch.device, seed: int
) -> dict[str, Tensor]:
    """A batch as the training loader gives it: pairs in [0, 1], a 0/1 mask, all valid."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, 2, bands, size, size, generator=generator)
    mask = (torch.rand(batch, 1, size, size, generator=generator) > 0.9).float()
    valid = torch.ones(batch, 1, size, size, dtype=torch.bool)
    return {"image": image.to(device), "mask": mask.to(device), "valid": valid.to(device)}


class _Timed:
    """Runs a :class:`~dsifn.training.step.TrainStep` on one fixed batch, for timing.

    The step counts non-finite losses on the device (no sync per step), so a fast path that
    trains on NaNs is reported, not timed as if it worked.
    """

    def __init__(self, step: TrainStep, batch: dict[str, Tensor]) -> None:
        self.step = step
        self.batch = batch
        self.calls = 0
        self.first_loss: Tensor | None = None

    def __call__(self) -> None:
        loss = self.step(self.batch).loss
        if self.first_loss is None:
            self.first_loss = loss
        self.calls += 1

    def health(self) -> dict[str, Any]:
        """Steps run, non-finite losses, and parameters with non-finite gradients or values."""
        named = [(n, p) for n, p in self.step.net.named_parameters() if p.requires_grad]
        bad_grads = [n for n, p in named if p.grad is not None and not torch.isfinite(p.grad).all()]
        bad_params = [n for n, p in named if not torch.isfinite(p).all()]
        return {
            "steps": self.calls,
            "first_loss": None if self.first_loss is None else float(self.first_loss),
            "nonfinite_losses": int(self.step.nonfinite_losses),
            "nonfinite_grads": bad_grads[:10],
            "nonfinite_grad_count": len(bad_grads),
            "nonfinite_params": len(bad_params),
        }


def training_step_flops(model: DSIFN, inputs: tuple[Tensor, Tensor, Tensor]) -> int:
    """FLOPs of one training step (forward, loss, backward), counted on a real step.

    With a frozen trunk the backward pass skips the encoder, so a step costs about twice the
    forward FLOPs of the decoder plus the forward; with a trainable trunk about three forwards.

    Args:
        model: The network, in training mode, on the inputs' device (its gradients are reset).
        inputs: (t1, t2, target) as (B, C, H, W), (B, C, H, W), (B, 1, H, W).

    Returns:
        The counted FLOPs (matrix products and convolutions, 2 per multiply-accumulate).
    """
    t1, t2, target = inputs
    loss_fn = DeepSupervisionLoss()
    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(model(t1, t2), target).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _load_model(config: BenchmarkConfig) -> DSIFN:
    torch.manual_seed(config.seed)
    if config.checkpoint is None:
        return DSIFN()
    from dsifn.io.checkpoint import load_checkpoint

    return load_checkpoint(config.checkpoint)


def _path_description(
    device: torch.device, precision: Precision, compiled: bool, *, fold: bool
) -> str:
    parts = ["channels_last", precision]
    if fold:
        parts.append("BN folded")
    if compiled:
        parts.append("torch.compile")
    if device.type == "cuda":
        parts.append("cudnn.benchmark")
    return ", ".join(parts)


@contextlib.contextmanager
def _cudnn_benchmark(enabled: bool) -> Iterator[None]:
    """Let cuDNN pick algorithms by trial for the fast path only (the baseline keeps default)."""
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = previous


def _switching(step: Callable[[], object], cudnn_benchmark: bool) -> Callable[[], None]:
    def run() -> None:
        with _cudnn_benchmark(cudnn_benchmark):
            step()

    return run


def _train_description(step: TrainStep, compiled: bool) -> str:
    parts = ["channels_last" if step.channels_last else "NCHW", step.precision]
    if compiled:
        parts.append("torch.compile")
    if step.device.type == "cuda":
        parts.append("cudnn.benchmark")
    fused = bool(step.optimizer.defaults.get("fused"))
    parts.append("fused Adam" if fused else "Adam")
    return ", ".join(parts)


def _measure_training(
    base_model: DSIFN,
    config: BenchmarkConfig,
    device: torch.device,
    precision: Precision,
    compiled: bool,
    batch: int,
) -> list[CaseResult]:
    """Time ``dsifn train``'s step: as the authors' code runs, and as dsifn train runs it."""
    from dsifn.training.config import TrainConfig

    defaults = TrainConfig()  # the loss and optimiser dsifn train uses unless told otherwise
    data = _train_batch(batch, base_model.config.in_channels, config.size, device, config.seed)

    def step(**options: Any) -> TrainStep:
        net = copy.deepcopy(base_model).train()
        return TrainStep(
            net,
            loss=defaults.loss,
            optim=defaults.optim,
            device=device,
            check_finite=False,
            **options,
        )

    base_step = step(precision="fp32", channels_last=False, fused=False)
    # The fast path: what dsifn train does by default here (layout, fused Adam: automatic).
    fast_step = step(precision=precision, compile=compiled)
    timed = {"baseline": _Timed(base_step, data), "fast": _Timed(fast_step, data)}
    steps = {
        "baseline": _switching(timed["baseline"], cudnn_benchmark=False),
        "fast": _switching(timed["fast"], cudnn_benchmark=True),
    }
    times, warm = _interleaved(steps, config, device)
    t1, t2, mask, _ = base_step.inputs(data)
    flops = training_step_flops(base_step.net, (t1, t2, mask))
    descriptions = {
        "baseline": _train_description(base_step, False),
        "fast": _train_description(fast_step, compiled),
    }
    peaks = {
        "baseline": config.peak_tflops or device_peak_tflops(device, "fp32"),
        "fast": config.peak_tflops or device_peak_tflops(device, fast_step.precision),
    }
    results = []
    for path in ("baseline", "fast"):
        case = _case(
            "train",
            path,
            descriptions[path],
            batch=batch,
            size=config.size,
            times=times[path],
            warmup=warm[path],
            memory=_peak_of(steps[path], device),
            flops=flops,
            peak=peaks[path],
        )
        case.extra = timed[path].health()
        results.append(case)
    del steps, timed, base_step, fast_step
    _free(device)
    return results


def _free(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _measure_inference(
    base_model: DSIFN,
    runner: TorchRunner,
    config: BenchmarkConfig,
    device: torch.device,
    batch: int,
) -> list[CaseResult]:
    # Both paths run as dsifn predict runs a model: through a TorchRunner, host arrays in and
    # out; the baseline is the eager fp32 NCHW network (fast=False).
    bands = base_model.config.in_channels
    baseline = TorchRunner(
        copy.deepcopy(base_model), device=str(device), precision="fp32", fast=False
    )
    t1, t2 = (x.cpu().numpy() for x in _pairs(batch, bands, config.size, device, config.seed))
    steps = {
        "baseline": _switching(lambda: baseline(t1, t2), cudnn_benchmark=False),
        "fast": _switching(lambda: runner(t1, t2), cudnn_benchmark=True),
    }
    times, warm = _interleaved(steps, config, device)
    flops = forward_flops(baseline.model, config.size, bands=bands, batch=batch)
    fast = runner.fast
    assert fast is not None
    compiled = fast._forward is not fast.module
    results = [
        _case(
            "infer",
            "baseline",
            "eager fp32 NCHW",
            batch=batch,
            size=config.size,
            times=times["baseline"],
            warmup=warm["baseline"],
            memory=_peak_of(steps["baseline"], device),
            flops=flops,
            peak=config.peak_tflops or device_peak_tflops(device, "fp32"),
        ),
        _case(
            "infer",
            "fast",
            _path_description(device, runner.precision, compiled, fold=True),
            batch=batch,
            size=config.size,
            times=times["fast"],
            warmup=warm["fast"],
            memory=_peak_of(steps["fast"], device),
            flops=flops,
            peak=config.peak_tflops or device_peak_tflops(device, runner.precision),
        ),
    ]
    _free(device)
    return results


def _worst(a: float, b: float) -> float:
    """The larger difference, NaN if either is NaN (``max`` would drop a NaN silently)."""
    return math.nan if math.isnan(a) or math.isnan(b) else max(a, b)


def compare_accuracy(
    model: DSIFN,
    fast: Callable[[Tensor, Tensor], Any],
    *,
    pairs: int = 8,
    size: int = 64,
    batch: int = 1,
    threshold: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> AccuracyReport:
    """Compare a fast path with the fp32 eager model on fixed synthetic pairs.

    The pairs come from :func:`dsifn.data.synthetic.generate_pair` (seeded), scaled to [0, 1]
    and normalised with the model's normalisation; bands are repeated cyclically when the model
    does not take 3. They go through in batches of ``batch``, the last one filled up with
    repeats (not counted), so a compiled fast path sees the one shape it was compiled for.

    Args:
        model: The network (evaluated in eval mode, float32, on ``device``; not modified).
        fast: The fast path: ``fast(t1, t2)`` returns five logit maps, finest first.
        pairs: Number of pairs.
        size: Their side.
        batch: Pairs per call.
        threshold: Decision threshold for the masks and F1.
        seed: Seed of the pairs.
        device: Where the baseline runs (and where inputs are made).

    Returns:
        The differences and both F1 scores against the synthetic reference.
    """
    from dsifn.data.synthetic import SyntheticConfig, generate_pair
    from dsifn.metrics import ConfusionMatrix

    dev = device if isinstance(device, torch.device) else torch.device(device)
    baseline = copy.deepcopy(model).to(dev).eval()
    bands = model.config.in_channels
    normalize = model.config.input_normalization
    synthetic = SyntheticConfig(size=size)
    cm_base, cm_fast = ConfusionMatrix(threshold), ConfusionMatrix(threshold)
    max_prob = max_logit = 0.0
    agree = total = 0
    samples = []
    for i in range(pairs):
        pair = generate_pair(synthetic, (seed, i))
        images = []
        for image in (pair.t1, pair.t2):
            x = torch.from_numpy(image.astype(np.float32) / 255.0).permute(2, 0, 1)
            images.append(normalize(x[torch.arange(bands) % x.shape[0]]))
        samples.append((images[0], images[1], torch.from_numpy(pair.label.astype(np.int64))))
    for first in range(0, pairs, batch):
        chunk = samples[first : first + batch]
        count = len(chunk)
        chunk += [chunk[-1]] * (batch - count)
        t1, t2, label = (torch.stack(parts).to(dev) for parts in zip(*chunk, strict=True))
        with torch.inference_mode():
            ref = baseline(t1, t2)
        out = fast(t1, t2)
        for a, b in zip(ref, out, strict=True):
            diff = (a[:count].float() - b[:count].float().to(dev)).abs().max().item()
            max_logit = _worst(max_logit, diff)
        p_ref = torch.sigmoid(ref.stride1[:count].float())
        p_fast = torch.sigmoid(out.stride1[:count].float().to(dev))
        max_prob = _worst(max_prob, (p_ref - p_fast).abs().max().item())
        agree += int(((p_ref > threshold) == (p_fast > threshold)).sum().item())
        total += p_ref.numel()
        cm_base.update(p_ref, label[:count, None])
        cm_fast.update(p_fast, label[:count, None])
    precision = getattr(fast, "precision", "unknown")
    return AccuracyReport(
        pairs=pairs,
        size=size,
        precision=str(precision),
        max_probability_difference=max_prob,
        max_logit_difference=max_logit,
        mask_agreement=agree / total if total else math.nan,
        f1_baseline=float(cm_base.scores()["f1"]),
        f1_fast=float(cm_fast.scores()["f1"]),
        threshold=threshold,
    )


def _write_scene_pair(folder: Path, side: int, bands: int, seed: int) -> tuple[Path, Path]:
    """Two uint8 GeoTIFFs of ``side`` x ``side`` pixels (UTM, 0.5 m), textured noise."""
    import rasterio
    from rasterio.transform import Affine

    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff",
        "height": side,
        "width": side,
        "count": bands,
        "dtype": "uint8",
        "crs": "EPSG:32633",
        "transform": Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
    }
    paths = []
    for name in ("t1.tif", "t2.tif"):
        path = folder / name
        with rasterio.open(path, "w", **profile) as dst:
            for top in range(0, side, 1024):
                rows = min(1024, side - top)
                block = rng.integers(0, 256, size=(bands, rows, side), dtype=np.uint8)
                dst.write(block, window=((top, top + rows), (0, side)))
        paths.append(path)
    return paths[0], paths[1]


def _measure_scene(
    base_model: DSIFN,
    config: BenchmarkConfig,
    device: torch.device,
    precision: Precision,
    batch: int,
) -> tuple[list[CaseResult], dict[str, float]]:
    from dsifn.inference.scene import SceneResult, predict_scene

    bands = base_model.config.in_channels
    # The runner as dsifn predict uses it: the eager fast path (not compiled: a scene's last,
    # smaller batch would recompile in the middle of the timing).
    runner = TorchRunner(copy.deepcopy(base_model), device=str(device), precision=precision)
    path = _path_description(device, precision, False, fold=True)
    size = config.size
    rng = np.random.default_rng(config.seed)
    tiles = rng.standard_normal((2, batch, bands, size, size), dtype=np.float32)

    def raw() -> None:
        runner(tiles[0], tiles[1])

    # The runner alone, on batches of tiles already in memory: the pixel rate to match.
    times, warm = _interleaved({"raw": raw}, config, device)
    raw_case = _case(
        "scene",
        "raw runner",
        f"TorchRunner on in-memory {size}px tiles ({path})",
        batch=batch,
        size=size,
        times=times["raw"],
        warmup=warm["raw"],
        memory=_peak_of(raw, device),
        flops=None,
        peak=None,
    )
    pixels = config.scene_size**2

    def whole_scene_case(path: str, what: str, seconds: float, memory: int | None) -> CaseResult:
        case = _case(
            "scene",
            path,
            what,
            batch=batch,
            size=size,
            times=[seconds],
            warmup=0.0,
            memory=memory,
            flops=None,
            peak=None,
        )
        # One "step" here is the whole scene: rates count the scene's own pixels.
        case.pairs_per_second = 1.0 / seconds
        case.megapixels_per_second = pixels / seconds / 1e6
        return case

    with tempfile.TemporaryDirectory(prefix="dsifn-bench-") as tmp:
        folder = Path(tmp)
        t1, t2 = _write_scene_pair(folder, config.scene_size, bands, config.seed)

        def predict(model: Any, name: str) -> tuple[SceneResult, float, int | None]:
            _sync(device)
            _reset_peak_memory(device)
            start = time.perf_counter()
            result = predict_scene(
                model, t1, t2, folder / name, tile_size=size, batch_size=batch, progress=False
            )
            _sync(device)
            return result, time.perf_counter() - start, _peak_memory(device)

        # The pipeline with a model that costs nothing: its own ceiling (reading, scaling,
        # normalising, blending, writing), which the model's rate must stay under.
        _, pipeline_seconds, pipeline_memory = predict(_ConstantRunner(runner), "pipeline.tif")
        result, seconds, memory = predict(runner, "change.tif")
    pipeline_case = whole_scene_case(
        "pipeline only",
        "predict_scene with a constant model: reading, scaling, blending, writing",
        pipeline_seconds,
        pipeline_memory,
    )
    scene_case = whole_scene_case(
        "predict_scene",
        f"{config.scene_size}px GeoTIFF pair, {result.tiles} tiles, overlap "
        f"{result.tags.get('overlap', '?')}px",
        seconds,
        memory,
    )
    tile_rate = result.tiles * size * size / seconds / 1e6
    scene_case.extra = {"tiles": result.tiles, "tile_megapixels_per_second": tile_rate}
    raw_rate = raw_case.megapixels_per_second
    ratios = {
        "scene_vs_raw_pixels": scene_case.megapixels_per_second / raw_rate,
        "scene_tiles_vs_raw": tile_rate / raw_rate,
        "pipeline_vs_raw_pixels": pipeline_case.megapixels_per_second / raw_rate,
    }
    return [raw_case, pipeline_case, scene_case], ratios


class _ConstantRunner:
    # A TileRunner with the real runner's attributes whose model costs nothing.
    def __init__(self, like: Any) -> None:
        self.in_channels = like.in_channels
        self.tile_size = like.tile_size
        self.normalization = like.normalization
        self.threshold = like.threshold
        self.contract = like.contract
        self.meta: dict[str, Any] = {}

    def __call__(self, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        return np.full((t1.shape[0], 1, *t1.shape[-2:]), 0.5, dtype=np.float32)


def run_benchmark(config: BenchmarkConfig) -> BenchmarkReport:
    """Measure the baseline and the fast path as ``config`` asks.

    Args:
        config: What to measure.

    Returns:
        The report (see :func:`format_report`).
    """
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    # Compiled inference by default on CUDA; compiled training only when asked for, until a
    # GPU run confirms the fix of its bf16 NaN gradients (benchmarks/RESULTS.md).
    compiled = device.type == "cuda" if config.compile is None else config.compile
    compiled_training = bool(config.compile)
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
        coarse = math.ceil(config.size / 16) ** 2  # pixels per map at stride 16
        if batch * coarse < 2:
            raise ConfigError(
                "a training step needs more than one value per BatchNorm channel at stride 16: "
                "use a batch of at least 2 or a size of at least 17"
            )
        train = _measure_training(model, config, device, precision, compiled_training, batch)
        cases += train
        ratios["train"] = train[1].pairs_per_second / train[0].pairs_per_second
        for case in train:
            if case.extra.get("nonfinite_losses") or case.extra.get("nonfinite_grad_count"):
                notes.append(
                    f"training {case.path} path: {case.extra['nonfinite_losses']} of "
                    f"{case.extra['steps']} losses and {case.extra['nonfinite_grad_count']} "
                    f"gradients not finite (e.g. {case.extra['nonfinite_grads'][:3]}): its "
                    "speed does not count"
                )
    runner: TorchRunner | None = None
    if config.mode in ("infer", "all") or config.accuracy_pairs:
        runner = TorchRunner(
            copy.deepcopy(model), device=str(device), precision=precision, compile=compiled
        )
    if config.mode in ("infer", "all"):
        assert runner is not None
        infer = _measure_inference(model, runner, config, device, infer_batch)
        cases += infer
        ratios["infer"] = infer[1].pairs_per_second / infer[0].pairs_per_second
    if config.mode in ("scene", "all"):
        scene, scene_ratios = _measure_scene(model, config, device, precision, infer_batch)
        cases += scene
        ratios.update(scene_ratios)
    accuracy = None
    if config.accuracy_pairs and runner is not None and runner.fast is not None:
        accuracy = compare_accuracy(
            model,
            runner.fast,
            pairs=config.accuracy_pairs,
            size=config.size,
            batch=infer_batch,  # the timed shape: no recompilation
            threshold=float(model.checkpoint_meta.get("threshold", 0.5)),
            seed=config.seed,
            device=device,
        )
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
    )


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def format_report(report: BenchmarkReport) -> str:
    """The report as a text table with the ratios and the accuracy cost."""
    env = report.environment
    lines = [
        f"dsifn {env['dsifn']}, torch {env['torch']}, {env.get('gpu', env['cpu'])} "
        f"({env['device']}, {env['threads']} CPU threads), {env['date_utc']}",
        f"{'task':<6} {'path':<14} {'batch':>5} {'s/step':>9} {'pairs/s':>9} {'Mpx/s':>8} "
        f"{'TFLOP/s':>8} {'of peak':>8} {'peak mem':>9} {'warm-up':>8}  what",
    ]
    for c in report.cases:
        memory = None if c.peak_memory_bytes is None else c.peak_memory_bytes / 2**30
        fraction = None if c.peak_fraction is None else 100 * c.peak_fraction
        lines.append(
            f"{c.task:<6} {c.path:<14} {c.batch:>5} {c.seconds_per_step:>9.4g} "
            f"{c.pairs_per_second:>9.4g} {c.megapixels_per_second:>8.4g} "
            f"{_fmt(c.tflops, '.4g'):>8} {_fmt(fraction, '.1f') + '%':>8} "
            f"{_fmt(memory, '.2f') + 'G':>9} {c.warmup_seconds:>7.1f}s  {c.description}"
        )
    for c in report.cases:
        if c.flops_per_step and c.path == "baseline":
            lines.append(
                f"counted FLOPs per {c.task} step of {c.batch} pairs: "
                f"{c.flops_per_step / 1e9:.1f} G ({c.flops_per_step / c.batch / 1e9:.1f} G/pair)"
            )
    for name, value in report.ratios.items():
        label = {
            "train": "training speed-up, fast / baseline",
            "infer": "inference speed-up, fast / baseline",
            "scene_vs_raw_pixels": "scene pixels/s over the raw runner's tile pixels/s",
            "scene_tiles_vs_raw": "scene tile pixels/s (overlap counted) over the raw runner's",
            "pipeline_vs_raw_pixels": "pipeline alone (constant model), scene pixels/s over "
            "the raw runner's",
        }.get(name, name)
        lines.append(f"{label}: {value:.2f}x")
    acc = report.accuracy
    if acc is not None:
        lines.append(
            f"accuracy cost ({acc.precision} fast path vs fp32 eager, {acc.pairs} synthetic "
            f"{acc.size}px pairs): max |dp| {acc.max_probability_difference:.2e}, max |dlogit| "
            f"{acc.max_logit_difference:.2e}, mask agreement {100 * acc.mask_agreement:.4f}%, "
            f"F1 {acc.f1_baseline:.4f} (fp32) vs {acc.f1_fast:.4f} (fast)"
        )
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)
