"""One training step: the one ``dsifn train`` runs and ``dsifn benchmark --mode train`` times.

A :class:`TrainStep` takes a batch as the data loader gives it, normalises both dates with the
model's normalisation in the chosen memory layout, runs the forward pass under autocast, the
deep-supervision loss (float32), checks that the loss is finite, and backpropagates through
the gradient scaler (active for fp16 only). After ``optim.accumulate`` micro-batches it clips
the gradient norm (``optim.grad_clip``) and steps the optimiser. Under DDP the gradients are
averaged at that step only.

Two models take part: ``model``, the network (DSIFN or a baseline of
:mod:`dsifn.models.registry`) whose parameters are optimised and saved, and ``wrapped``, what
the forward pass calls: ``model`` itself, or ``model`` in DDP and/or compiled (see
:func:`wrap_for_training`).

The same forward and loss, without the backward, give validation its loss (:meth:`TrainStep.loss`);
scoring the model is the evaluation core's job (:mod:`dsifn.training.validation`).

Compiled training, told here once: ``torch.compile`` (``compile=True``, from ``run.compile``
or the benchmark's ``compile`` option) fuses the elementwise work (PReLU, BatchNorm, the
attention products) into few kernels, at a start-up cost of a minute or two per input
shape, which a long run of fixed-size crops pays once. It is opt-in: compiled bf16 training
gave NaN gradients from its first step, through the spatial attention's ``amax`` (now
``max(dim)``, see :class:`~dsifn.models.dsifn.SpatialAttention`); the fix holds on a CPU,
and a GPU has yet to confirm it and measure the speed-up (``benchmarks/RESULTS.md``).
Validation never runs the compiled module (see :meth:`TrainStep.loss`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from dsifn.devices import autocast, resolve_precision
from dsifn.distributed import DistContext, all_reduce_sum
from dsifn.errors import DSIFNError
from dsifn.losses import DeepSupervisionLoss
from dsifn.models.dsifn import DSIFNOutput
from dsifn.models.outputs import ChangeOutput
from dsifn.models.registry import ChangeNetwork, entry_of
from dsifn.training.config import LossConfig, OptimConfig, ScheduleConfig, loss_weights
from dsifn.training.optim import build_optimisation

__all__ = ["StepResult", "TrainStep", "resolve_channels_last", "wrap_for_training"]

# Batch = {"image": (B, 2, C, H, W) float in [0, 1], "mask": (B, 1, H, W) 0/1,
#          "valid": (B, 1, H, W) bool, ...}, as ChangeDetectionDataset and its loader give it.
Batch = Mapping[str, Any]


def resolve_channels_last(setting: bool | None, device: torch.device) -> bool:
    """Whether training uses the NHWC (channels_last) memory layout.

    Args:
        setting: ``run.channels_last``; None (the default) turns it on where it was measured
            faster for training: CUDA (cuDNN's tensor-core convolutions) and CPUs (oneDNN;
            benchmarks/RESULTS.md, "One training step"). Other devices keep NCHW.
        device: Where the run trains.
    """
    if setting is not None:
        return setting
    return device.type in ("cuda", "cpu")


class StepResult(NamedTuple):
    """What one micro-batch of :class:`TrainStep` gives back (all detached, on the device)."""

    loss: Tensor  # () float32: the batch's deep-supervision loss
    logits: Tensor  # (B, 1, H, W): the stride-1 change logits
    mask: Tensor  # (B, 1, H, W): the reference
    valid: Tensor  # (B, 1, H, W) bool: labelled pixels
    stepped: bool  # whether the optimiser stepped after this batch


def wrap_for_training(
    model: ChangeNetwork, *, device: torch.device, ctx: DistContext, compile: bool
) -> tuple[nn.Module, nn.parallel.DistributedDataParallel | None]:
    """What the training forward pass calls: ``model``, in DDP and/or compiled.

    Args:
        model: The network, already on ``device`` in its memory layout.
        device: This process's device.
        ctx: This process's place in the run: several processes wrap ``model`` in DDP.
        compile: ``torch.compile`` the result (opt-in; see the module docstring).

    Returns:
        The module to call, and the DDP wrapper (for ``no_sync``) or None.
    """
    wrapped: nn.Module = model
    ddp: nn.parallel.DistributedDataParallel | None = None
    if ctx.distributed:
        ddp = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
        wrapped = ddp
    if compile:
        wrapped = torch.compile(wrapped)  # type: ignore[assignment]
    return wrapped, ddp


class TrainStep:
    """Forward, loss, backward and (every ``optim.accumulate`` batches) an optimiser step.

    Attributes:
        model: The network, on ``device`` in the chosen layout; its parameters are optimised.
        wrapped: What the forward pass calls: ``model``, wrapped in DDP and/or compiled.
        optimizer: Built by :func:`~dsifn.training.optim.build_optimisation` (fused on CUDA).
        scheduler: The learning-rate schedule (stepped by the engine), or None.
        scaler: The gradient scaler (enabled for fp16 only).
        loss_fn: The deep-supervision loss, one weight per output of the network
            (:func:`~dsifn.training.config.loss_weights`).
        precision: The resolved precision.
        channels_last: Whether inputs and weights are NHWC.
        nonfinite_losses: () int64 count of non-finite losses seen when ``check_finite`` is
            off, kept on the device (no sync per step).
    """

    def __init__(
        self,
        model: ChangeNetwork,
        *,
        loss: LossConfig,
        optim: OptimConfig,
        schedule: ScheduleConfig | None = None,
        device: torch.device,
        precision: str = "auto",
        channels_last: bool | None = None,
        compile: bool = False,
        fused: bool | None = None,
        ctx: DistContext | None = None,
        check_finite: bool = True,
    ) -> None:
        """Place ``model`` on ``device`` and build the optimisation around it.

        Args:
            model: The network, moved in place (device, layout).
            loss: The ``loss`` section.
            optim: The ``optim`` section (optimiser, accumulation, clipping).
            schedule: The ``schedule`` section; None: the defaults.
            device: Where to train; under DDP, this process's device.
            precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (see ``resolve_precision``).
            channels_last: NHWC layout; None: see :func:`resolve_channels_last`.
            compile: ``torch.compile`` the forward (``run.compile``; see the module docstring).
            fused: Fused Adam; None: on CUDA (see ``build_optimizer``).
            ctx: This process's place in a DDP run; None for one process.
            check_finite: Stop with a :class:`DSIFNError` at a non-finite loss (one sync per
                batch, agreed across processes); off, such losses are only counted.
        """
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.channels_last = resolve_channels_last(channels_last, device)
        self.memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.ctx = ctx or DistContext()
        self.accumulate = optim.accumulate
        self.grad_clip = optim.grad_clip
        self.check_finite = check_finite
        model.to(device, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.model = model
        self.wrapped, self._ddp = wrap_for_training(
            model, device=device, ctx=self.ctx, compile=compile
        )
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer, self.scheduler, self.scaler = build_optimisation(
            self.params,
            optim,
            schedule or ScheduleConfig(),
            device=device,
            precision=self.precision,
            fused=fused,
        )
        outputs = len(model.output_strides)
        self.loss_fn = DeepSupervisionLoss(
            weights=loss_weights(loss, outputs, entry_of(model).title),
            target_mode=loss.target_mode,
            pos_weight=loss.pos_weight,
            bce_weight=loss.bce_weight,
            dice_weight=loss.dice_weight,
        )
        self.nonfinite_losses = torch.zeros((), dtype=torch.int64, device=device)
        self._micro = 0  # micro-batches since the last optimiser step

    def inputs(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Both dates normalised, in the step's layout, and the reference, on the device.

        Returns:
            ``(t1, t2, mask, valid)``: (B, C, H, W) twice, then (B, 1, H, W) twice.
        """
        image = batch["image"].to(self.device, non_blocking=True)  # (B, 2, C, H, W) in [0, 1]
        norm = self.model.config.input_normalization
        t1 = norm(image[:, 0]).contiguous(memory_format=self.memory_format)
        t2 = norm(image[:, 1]).contiguous(memory_format=self.memory_format)
        mask = batch["mask"].to(self.device, non_blocking=True)
        valid = batch["valid"].to(self.device, non_blocking=True)
        return t1, t2, mask, valid

    def _forward(
        self, module: nn.Module, batch: Batch
    ) -> tuple[DSIFNOutput | ChangeOutput, Tensor, Tensor, Tensor]:
        """Outputs and loss of ``batch`` through ``module``, with the reference it used."""
        t1, t2, mask, valid = self.inputs(batch)
        with autocast(self.device, self.precision):
            outputs: DSIFNOutput | ChangeOutput = module(t1, t2)
        loss = self.loss_fn(outputs, mask, valid)  # float32 whatever the autocast dtype
        return outputs, loss, mask, valid

    def __call__(self, batch: Batch, *, flush: bool = False, where: str = "") -> StepResult:
        """Train on one micro-batch; step the optimiser after ``optim.accumulate`` of them.

        Args:
            batch: ``{"image", "mask", "valid"}`` as the loader gives them.
            flush: Step the optimiser after this batch whatever the count (an epoch's end).
            where: Appended to the non-finite loss error, e.g. " at step 3 of epoch 1".

        Raises:
            DSIFNError: If ``check_finite`` is on and the loss (on any process) is not finite.
        """
        if self._micro == 0:
            # Zeroed here rather than after the step, so a finished step's gradients stay
            # readable (the benchmark checks them for non-finite values).
            self.optimizer.zero_grad(set_to_none=True)
        boundary = flush or self._micro + 1 >= self.accumulate
        # Between steps, DDP keeps the gradients local; the step's batch averages them.
        ddp = self._ddp
        with ddp.no_sync() if ddp is not None and not boundary else contextlib.nullcontext():
            outputs, loss, mask, valid = self._forward(self.wrapped, batch)
            self._check(loss.detach(), where)
            self.scaler.scale(loss / self.accumulate).backward()  # type: ignore[no-untyped-call]
        self._micro += 1
        if boundary:
            self._optimizer_step()
        return StepResult(loss.detach(), outputs.stride1.detach(), mask, valid, boundary)

    def _check(self, loss: Tensor, where: str) -> None:
        if not self.check_finite:
            self.nonfinite_losses += (~torch.isfinite(loss)).long()
            return
        value = float(loss)
        # Collective, so that every process stops at the same step rather than hanging.
        if all_reduce_sum(self.ctx, [0.0 if math.isfinite(value) else 1.0])[0]:
            raise DSIFNError(
                f"the training loss is not finite ({value}){where}: lower optim.lr, set "
                "optim.grad_clip, use run.precision=fp32 or turn run.compile off"
            )

    def _optimizer_step(self) -> None:
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._micro = 0

    @torch.no_grad()
    def loss(self, batch: Batch) -> Tensor:
        """The deep-supervision loss of a batch through ``model`` as it is (validation's loss).

        Put ``model`` in eval mode first. ``model`` runs, not ``wrapped``: every process
        scores its own shard, and eval mode would recompile a compiled module.

        Returns:
            The () float32 loss.
        """
        return self._forward(self.model, batch)[1]
