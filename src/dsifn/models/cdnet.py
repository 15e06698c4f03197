"""CDNet: the deconvolutional change-detection network of Alcantarilla et al.

Alcantarilla, Stent, Ros, Arroyo & Gherardi, "Street-view change detection with
deconvolutional networks", Autonomous Robots 42(7):1301-1322, 2018.

As the change-detection literature benchmarks it (the CDLab and PaddleRS ports, 1.43 M
parameters for RGB pairs): the two dates stacked into one 2C-band image; four contraction
blocks (7x7 convolution of 64 channels without bias, BatchNorm, ReLU), each followed by a 2x2
max-pool that keeps where each maximum was; four expansion blocks, each unpooling (every
value back to where its maximum came from, zeros elsewhere) before its 7x7 block; a 7x7
convolution to the logits. There is no dropout, as in the ports.

Departures from the ports: one logit channel instead of two softmax channels (7x7x64 + 1 =
3,137 parameters fewer); reflection padding to multiples of 16 (the ports take multiples of
16 only). The unpooling is computed without ``MaxUnpool2d``: pooling takes the maximum of
each 2x2 window with ``max`` over the window's four values, whose index is kept as a one-hot
mask of the window, and unpooling multiplies the upsampled values by that mask. The result
equals ``max_pool2d(return_indices=True)`` then ``max_unpool2d`` exactly, gradients and ties
(first maximum) included, but uses only reshapes, a reduction, a comparison and a product,
which both ONNX exporters and OpenVINO take with dynamic sizes. ``MaxUnpool2d`` does not:
the TorchScript exporter refuses it, and OpenVINO runs the dynamo exporter's ``MaxUnpool``
wrongly (its indices cover one (H, W) plane in PyTorch, the whole tensor in ONNX; checked with
torch 2.13 and OpenVINO 2026.4).

Parameters: 1,427,905 for 3 bands, 1,409,089 + 6,272 C for C bands per date (the ports, with
two output channels: 1,431,042 for 3 bands).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from dsifn.models.baseline import BaselineConfig, BaselineNetwork, configured

__all__ = ["CDNet", "CDNetConfig", "max_pool_with_switches", "unpool"]

WIDTH = 64  # channels of every block
KERNEL = 7  # side of every convolution
LEVELS = 4  # contraction (and expansion) blocks


@dataclass(frozen=True)
class CDNetConfig(BaselineConfig):
    """Everything needed to rebuild a CDNet; no dropout (the literature uses none)."""

    name: ClassVar[str] = "cdnet"


def _block(in_channels: int) -> nn.Sequential:
    """7x7 convolution to 64 channels (no bias: BatchNorm follows), BatchNorm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, WIDTH, KERNEL, padding=KERNEL // 2, bias=False),
        nn.BatchNorm2d(WIDTH),
        nn.ReLU(),
    )


def max_pool_with_switches(x: Tensor) -> tuple[Tensor, Tensor]:
    """2x2 max-pooling that records where each maximum was.

    Args:
        x: (B, C, H, W) with even H and W.

    Returns:
        The pooled (B, C, H/2, W/2) map and the switches: a (B, C, H/2, W/2, 4) bool mask,
        one-hot over each window's pixels in row-major order, True at its first maximum.
    """
    batch, channels, height, width = x.shape
    windows = x.reshape(batch, channels, height // 2, 2, width // 2, 2)
    windows = windows.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, height // 2, width // 2, 4)
    pooled, where = windows.max(dim=-1)
    switches = where.unsqueeze(-1) == torch.arange(4, device=x.device)
    return pooled, switches


def unpool(x: Tensor, switches: Tensor) -> Tensor:
    """Put each value back where its window's maximum was, zeros elsewhere.

    Args:
        x: (B, C, h, w) values.
        switches: (B, C, h, w, 4) from :func:`max_pool_with_switches`.

    Returns:
        (B, C, 2h, 2w).
    """
    batch, channels, height, width = x.shape
    spread = (x.unsqueeze(-1) * switches).reshape(batch, channels, height, width, 2, 2)
    return spread.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, 2 * height, 2 * width)


class CDNet(BaselineNetwork):
    """The CDNet change-detection network (Alcantarilla et al., Auton. Robots 42, 2018).

    Example:
        >>> model = CDNet()
        >>> model(torch.rand(1, 3, 37, 53), torch.rand(1, 3, 37, 53)).stride1.shape
        torch.Size([1, 1, 37, 53])
    """

    config: CDNetConfig

    def __init__(self, config: CDNetConfig | None = None, **options: Any) -> None:
        """Build the network.

        Args:
            config: Full configuration; ``options`` override single fields of it.
            **options: Fields of :class:`CDNetConfig`, e.g. ``in_channels=4``.
        """
        super().__init__(configured(CDNetConfig, config, options))
        ins = [2 * self.config.in_channels] + [WIDTH] * (LEVELS - 1)
        self.encoder = nn.ModuleList(_block(i) for i in ins)
        self.decoder = nn.ModuleList(_block(WIDTH) for _ in range(LEVELS))
        self.head = nn.Conv2d(WIDTH, 1, KERNEL, padding=KERNEL // 2)

    def logits(self, t1: Tensor, t2: Tensor) -> Tensor:
        """(B, 1, H, W) logits of (B, C, H, W) dates, H and W multiples of 16."""
        x = torch.cat([t1, t2], dim=1)
        switches: list[Tensor] = []
        for block in self.encoder:
            x, where = max_pool_with_switches(block(x))
            switches.append(where)
        for block, where in zip(self.decoder, reversed(switches), strict=True):
            x = block(unpool(x, where))
        out: Tensor = self.head(x)
        return out
