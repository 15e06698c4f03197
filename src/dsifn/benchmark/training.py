"""The training case: ``dsifn train``'s own step, as the authors' code runs it and as dsifn does.

Both paths are the :class:`~dsifn.training.step.TrainStep` that ``dsifn train`` runs, with the
loss and optimiser it uses unless told otherwise. The **baseline** is eager float32, NCHW, with
Adam's plain loop; the **fast path** takes ``dsifn train``'s defaults on the device (layout,
precision, fused Adam on CUDA), compiled only when ``BenchmarkConfig.compile`` is True (as
``run.compile`` does in training). FLOPs are counted around a real step: forward, loss and
backward.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

from dsifn.benchmark.config import BenchmarkConfig
from dsifn.benchmark.hardware import device_peak_tflops, free, peak_memory_of
from dsifn.benchmark.results import CaseResult
from dsifn.benchmark.timing import case_result, interleaved, switching
from dsifn.devices import Precision
from dsifn.errors import ConfigError
from dsifn.losses import DeepSupervisionLoss
from dsifn.models.registry import ChangeNetwork
from dsifn.training.step import TrainStep

__all__ = ["measure_training", "training_step_flops"]


def training_step_flops(model: ChangeNetwork, inputs: tuple[Tensor, Tensor, Tensor]) -> int:
    """FLOPs of one training step (forward, loss, backward), counted on a real step.

    With a frozen encoder the backward pass skips it, so a step costs about twice the
    forward FLOPs of the decoder plus the forward; with a trainable encoder about three forwards.

    Args:
        model: The network, in training mode, on the inputs' device (its gradients are reset).
        inputs: (t1, t2, target) as (B, C, H, W), (B, C, H, W), (B, 1, H, W).

    Returns:
        The counted FLOPs (matrix products and convolutions, 2 per multiply-accumulate).
    """
    t1, t2, target = inputs
    loss_fn = DeepSupervisionLoss(weights=(1.0,) * len(model.output_strides))  # on every output
    counter = FlopCounterMode(display=False)
    with counter:
        loss_fn(model(t1, t2), target).backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def _check_batch(batch: int, size: int) -> None:
    """Refuse a batch that BatchNorm cannot train on: one value per channel at stride 16."""
    coarse = math.ceil(size / 16) ** 2  # pixels per map at stride 16
    if batch * coarse < 2:
        raise ConfigError(
            "a training step needs more than one value per BatchNorm channel at stride 16: "
            "use a `batch` of at least 2 or a `size` of at least 17"
        )


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
        named = [(n, p) for n, p in self.step.model.named_parameters() if p.requires_grad]
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


def _train_steps(
    base_model: ChangeNetwork, device: torch.device, precision: Precision, compiled: bool
) -> dict[str, TrainStep]:
    """The baseline's step and the fast path's, each on its own copy of the network."""
    from dsifn.training.config import TrainConfig

    defaults = TrainConfig()  # the loss and optimiser dsifn train uses unless told otherwise

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

    return {
        "baseline": step(precision="fp32", channels_last=False, fused=False),
        # What dsifn train does by default here (layout, fused Adam: automatic).
        "fast": step(precision=precision, compile=compiled),
    }


def _train_description(step: TrainStep, compiled: bool) -> str:
    parts = ["channels_last" if step.channels_last else "NCHW", step.precision]
    if compiled:
        parts.append("torch.compile")
    if step.device.type == "cuda":
        parts.append("cudnn.benchmark")
    fused = bool(step.optimizer.defaults.get("fused"))
    parts.append("fused Adam" if fused else "Adam")
    return ", ".join(parts)


def measure_training(
    base_model: ChangeNetwork,
    config: BenchmarkConfig,
    device: torch.device,
    precision: Precision,
    compiled: bool,
    batch: int,
) -> list[CaseResult]:
    """Time ``dsifn train``'s step: as the authors' code runs, and as dsifn train runs it.

    Returns:
        The baseline's case and the fast path's, in that order; each ``extra`` holds the
        step's health (non-finite losses and gradients), which says whether its speed counts.

    Raises:
        ConfigError: When ``batch`` pairs of ``config.size`` leave BatchNorm one value per
            channel at stride 16.
    """
    _check_batch(batch, config.size)
    data = _train_batch(batch, base_model.config.in_channels, config.size, device, config.seed)
    train_steps = _train_steps(base_model, device, precision, compiled)
    timed = {path: _Timed(step, data) for path, step in train_steps.items()}
    # cuDNN's algorithm search for the fast path only: the baseline keeps PyTorch's default.
    steps = {path: switching(timed[path], cudnn_benchmark=path == "fast") for path in timed}
    times, warm = interleaved(steps, config, device)
    base_step = train_steps["baseline"]
    t1, t2, mask, _ = base_step.inputs(data)
    flops = training_step_flops(base_step.model, (t1, t2, mask))
    results = []
    for path, step in train_steps.items():
        case = case_result(
            "train",
            path,
            _train_description(step, compiled and path == "fast"),
            batch=batch,
            size=config.size,
            times=times[path],
            warmup=warm[path],
            memory=peak_memory_of(steps[path], device),
            flops=flops,
            peak=config.peak_tflops or device_peak_tflops(device, step.precision),
        )
        case.extra = timed[path].health()
        results.append(case)
    del steps, timed, train_steps, base_step, step
    free(device)
    return results
