"""Optimiser, learning-rate schedule and gradient scaler, built by one function from the config.

:func:`build_optimisation` is the one builder: the training step (:mod:`dsifn.training.step`)
builds its optimisation with it, and the run's settings check calls it on a stand-in parameter
before anything is written, so a value torch refuses is refused up front, the same way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
from torch import nn

from dsifn.training.config import OptimConfig, ScheduleConfig

__all__ = ["Optimisation", "build_optimisation", "build_optimizer", "build_scheduler"]


class Optimisation(NamedTuple):
    """What steps the parameters: the optimiser, its schedule and the gradient scaler."""

    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch learning-rate scheduler, or None for a constant rate
    scaler: torch.amp.GradScaler  # enabled for fp16 only


def build_optimisation(
    params: Iterable[nn.Parameter],
    optim: OptimConfig,
    schedule: ScheduleConfig,
    *,
    device: torch.device,
    precision: str,
    fused: bool | None = None,
) -> Optimisation:
    """The optimiser, schedule and gradient scaler of a run.

    Args:
        params: The trainable parameters, already on their device.
        optim: The ``optim`` section.
        schedule: The ``schedule`` section.
        device: Where the run trains (the scaler's device type).
        precision: The resolved precision; the scaler scales fp16 losses only.
        fused: Fused Adam/AdamW (see :func:`build_optimizer`).
    """
    optimizer = build_optimizer(params, optim, fused=fused)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    return Optimisation(optimizer, build_scheduler(optimizer, schedule), scaler)


def build_optimizer(
    params: Iterable[nn.Parameter], config: OptimConfig, *, fused: bool | None = None
) -> torch.optim.Optimizer:
    """The optimiser ``config`` names, over ``params`` (the trainable parameters).

    Args:
        params: The parameters to optimise, already on their device.
        config: The ``optim`` section.
        fused: Adam and AdamW update every tensor in one fused kernel; None (the default)
            fuses where the parameters are on CUDA, where it is faster and updates equal
            the loop's up to rounding. SGD ignores it.
    """
    params = list(params)
    if fused is None:
        fused = bool(params) and all(p.is_cuda for p in params)
    if config.optimizer == "adam":
        return torch.optim.Adam(
            params,
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
            fused=fused or None,
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            params,
            lr=config.lr,
            betas=config.betas,
            weight_decay=config.weight_decay,
            fused=fused or None,
        )
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def build_scheduler(optimizer: torch.optim.Optimizer, config: ScheduleConfig) -> Any:
    """The learning-rate schedule, or None for a constant rate.

    ``"plateau"`` is stepped with the validation F1 after each round; ``"cosine"`` once per
    epoch, over ``config.epochs``.
    """
    if config.scheduler == "plateau":
        # torch lowers the rate when bad rounds *exceed* `patience`; the config counts as
        # Keras does (lower at the `plateau_patience`-th bad round in a row), hence the - 1.
        # threshold 0: any F1 gain counts, as for early stopping.
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=config.plateau_factor,
            patience=config.plateau_patience - 1,
            threshold=0.0,
            threshold_mode="abs",
            min_lr=config.min_lr,
        )
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=config.epochs, eta_min=config.min_lr
        )
    return None
