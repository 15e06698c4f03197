"""What a benchmark run measures, and how long: :class:`BenchmarkConfig`, checked on creation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from dsifn._validation import check_choice
from dsifn.devices import Precision
from dsifn.errors import ConfigError

__all__ = ["BENCHMARK_RUNTIMES", "BenchmarkConfig", "Mode"]

Mode = Literal["train", "infer", "scene", "all"]
# The inference paths `runtimes` takes (dsifn.benchmark.runtimes builds them), in report order.
BENCHMARK_RUNTIMES = (
    "eager",
    "fast",
    "openvino",
    "openvino-int8",
    "onnxruntime",
    "onnxruntime-int8",
)


@dataclass(frozen=True)
class BenchmarkConfig:
    """What :func:`~dsifn.benchmark.run_benchmark` measures, and how long."""

    device: str = "auto"  # auto, cpu, cuda or cuda:N
    size: int = 256  # side of each image (and of the scene's tiles)
    batch: int | None = None  # training pairs per step; None: 16 on CUDA, 2 on a CPU
    infer_batch: int | None = None  # inference pairs per call; None: twice `batch`
    mode: Mode = "all"  # what to measure: train, infer, scene or all
    steps: int = 5  # timed steps per round and case
    warmup: int = 2  # untimed steps per case before timing (compilation happens here)
    rounds: int = 3  # alternating rounds of baseline and fast; the median round counts
    precision: Precision = "auto"  # fast path precision; fp32 opts out of autocast
    compile: bool | None = None  # torch.compile the fast path; None: inference on CUDA only
    peak_tflops: float | None = None  # device peak for the fast path; None: from the table
    scene_size: int = 2048  # side of the generated scene (scene mode)
    accuracy_pairs: int = 8  # synthetic pairs for the accuracy comparison; 0 skips it
    checkpoint: str | None = None  # benchmark this checkpoint's model; None: a random init
    runtimes: tuple[str, ...] = ("eager", "fast")  # inference paths; eager is the baseline
    data: str | None = None  # dataset: int8 calibration, and F1 agreement with a checkpoint
    calibration_pairs: int = 16  # tiles calibrating the int8 runtimes
    seed: int = 0  # seeds weights and inputs

    def __post_init__(self) -> None:
        """Check values; messages quote the parameter (the command line writes its flag)."""
        check_choice("mode", self.mode, get_args(Mode))
        if self.size < 16:
            raise ConfigError(f"`size` must be at least 16; got {self.size}")
        for name in ("batch", "infer_batch"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"`{name}` must be at least 1; got {value}")
        if self.steps < 1 or self.rounds < 1 or self.warmup < 0:
            raise ConfigError("`steps` and `rounds` must be at least 1, `warmup` at least 0")
        if self.scene_size < self.size:
            raise ConfigError(f"`scene_size` must be at least `size` ({self.size})")
        if self.peak_tflops is not None and not self.peak_tflops > 0:
            raise ConfigError(f"`peak_tflops` must be positive; got {self.peak_tflops}")
        for name in self.runtimes:
            check_choice("runtimes", name, BENCHMARK_RUNTIMES)
        if len(set(self.runtimes)) != len(self.runtimes):
            raise ConfigError(f"`runtimes` names a runtime twice: {','.join(self.runtimes)}")
        # The eager baseline, which every ratio is taken against, runs first in any case.
        rest = tuple(r for r in self.runtimes if r != "eager")
        object.__setattr__(self, "runtimes", ("eager", *rest))
        if self.calibration_pairs < 1:
            raise ConfigError("`calibration_pairs` must be at least 1")
        if self.accuracy_pairs < 0:
            raise ConfigError("`accuracy_pairs` must not be negative")
