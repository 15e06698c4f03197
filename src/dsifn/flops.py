"""Counting parameters and floating-point operations of a model."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "forward_flops"]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """Return (total, trainable) parameter counts of ``model``."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def forward_flops(
    model: nn.Module, size: int | tuple[int, int], bands: int = 3, batch: int = 1
) -> int:
    """Floating-point operations of one forward pass on a pair of (H, W) images, counted.

    Counts what PyTorch's FLOP counter attributes to matrix products and convolutions (two
    operations per multiply-accumulate); elementwise work is not counted, as is usual.

    Args:
        model: A network taking ``(t1, t2)``.
        size: Side, or (H, W), of the input images.
        bands: Bands per image.
        batch: Pairs per batch.

    Returns:
        The FLOP count.
    """
    height, width = (size, size) if isinstance(size, int) else size
    device = next(model.parameters()).device
    t1 = torch.zeros(batch, bands, height, width, device=device)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with counter, torch.no_grad():
            model(t1, t1.clone())
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
