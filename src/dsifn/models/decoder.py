"""The decoder's parts (the paper's DDN): channel and spatial attention, and the fusion stage.

Each of the five stages fuses the two dates' encoder features with the decoder state, weighs
them by channel attention, refines them with conv blocks and spatial attention, and emits the
state that its side head and the next stage read (:class:`DecoderStage`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsifn.errors import ConfigError

__all__ = [
    "ChannelAttention",
    "DecoderStage",
    "Descriptors",
    "ElementwisePReLU",
    "PReLUMode",
    "SpatialAttention",
    "decoder_widths",
]

PReLUMode = Literal["layer", "channel", "element"]
# A channel attention's pooled input: per-channel mean and max, each (C,) or (B, C).
Descriptors = tuple[Tensor, Tensor]


class ElementwisePReLU(nn.Module):
    """PReLU with one slope per element of a (C, H, W) input, as Keras's default PReLU."""

    def __init__(self, shape: tuple[int, int, int], init: float = 0.25) -> None:
        """Create slopes of the given (C, H, W) shape."""
        super().__init__()
        self.weight = nn.Parameter(torch.full(shape, init))

    def forward(self, x: Tensor) -> Tensor:
        """Apply ``max(0, x) + weight * min(0, x)`` to (B, C, H, W) input."""
        return torch.where(x >= 0, x, x * self.weight)


class ChannelAttention(nn.Module):
    """CBAM channel attention (Woo et al., ECCV 2018), as used in DSIFN's decoder.

    Average- and max-pooled descriptors go through one shared MLP (C -> C/r -> ReLU -> C);
    their sum, squashed by a sigmoid, reweights the channels.
    """

    def __init__(self, channels: int, reduction: int = 8, bias: bool = False) -> None:
        """Create the shared MLP as 1x1 convolutions."""
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=bias)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=bias)

    def forward(self, x: Tensor, pooled: Descriptors | None = None) -> Tensor:
        """Reweight the channels of (B, C, H, W) input.

        Args:
            x: The input.
            pooled: The channel mean and max to use instead of pooling ``x`` itself, each of
                shape (C,) or (B, C): scene-wide descriptors for tiled inference that must
                equal whole-image inference (:mod:`dsifn.inference.scene_attention`).
        """
        if pooled is None:
            mean, peak = F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)
        else:
            shape = (-1, x.shape[1], 1, 1)
            mean, peak = (p.to(x.device, x.dtype).reshape(shape) for p in pooled)
        avg_out = self.fc2(F.relu(self.fc1(mean)))
        max_out = self.fc2(F.relu(self.fc1(peak)))
        return x * torch.sigmoid(avg_out + max_out)


class SpatialAttention(nn.Module):
    """CBAM spatial attention: a 7x7 convolution over per-pixel channel mean and max."""

    def __init__(self, kernel_size: int = 7) -> None:
        """Create the 2 -> 1 convolution."""
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Reweight the pixels of (B, C, H, W) input."""
        # max(dim).values, not amax: amax's gradient goes to the elements equal to the maximum,
        # and under torch.compile with bf16 autocast the recomputed elements (kept in fp32)
        # need not equal the saved bf16 maximum; no element matched, and 0 / 0 made every
        # gradient NaN from the first step. max(dim) routes the gradient by index.
        peak = x.max(dim=1, keepdim=True).values
        pooled = torch.cat([x.mean(dim=1, keepdim=True), peak], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


def decoder_widths(encoder_channels: Sequence[int]) -> list[tuple[int, ...]]:
    """Output channels of each decoder stage's conv blocks, coarsest stage first.

    The paper's table: a stage working at the scale of an encoder tap with ``c`` channels has
    blocks (c, c) at the coarsest scale, (c, c/2, c/2) in between and (c, c/2, c/4) at the
    finest. For VGG16 this gives (512, 512), (512, 256, 256), (256, 128, 128), (128, 64, 64),
    (64, 32, 16).

    Args:
        encoder_channels: Channels of the encoder taps, finest first.

    Returns:
        One tuple of widths per stage, coarsest first.
    """
    coarse_first = list(reversed(encoder_channels))
    widths: list[tuple[int, ...]] = []
    for i, c in enumerate(coarse_first):
        if i == 0:
            widths.append((c, c))
        elif i == len(coarse_first) - 1:
            widths.append((c, c // 2, c // 4))
        else:
            widths.append((c, c // 2, c // 2))
    return widths


def _prelu(mode: PReLUMode, channels: int, spatial_size: int | None) -> nn.Module:
    """A PReLU with one slope per layer, per channel, or per element of (C, side, side)."""
    if mode == "element":
        if spatial_size is None:
            raise ConfigError("per-element PReLU needs a fixed input size")
        return ElementwisePReLU((channels, spatial_size, spatial_size))
    return nn.PReLU(channels if mode == "channel" else 1)


class DecoderStage(nn.Module):
    """One DDN stage: [up] -> concat -> [channel attention] -> conv blocks -> SA -> [BN].

    A conv block is 3x3 conv -> PReLU -> BatchNorm -> Dropout. The stage's output state feeds
    its side head and the next stage's transposed-convolution upsampling.
    """

    def __init__(
        self,
        in_channels: int,
        widths: Sequence[int],
        *,
        previous_channels: int | None,
        channel_attention: bool,
        bn_after_attention: bool,
        attention_bias: bool,
        dropout: float,
        prelu: PReLUMode,
        spatial_size: int | None,
        bn_eps: float,
        bn_momentum: float,
    ) -> None:
        """Build one stage.

        Args:
            in_channels: Channels of the concatenated input (state and both dates' features).
            widths: Output channels of the conv blocks.
            previous_channels: Channels of the previous stage's state, or None for the first.
            channel_attention: Put channel attention on the concatenated input.
            bn_after_attention: Put a BatchNorm after the spatial attention.
            attention_bias: Give the channel-attention MLP biases (Keras file).
            dropout: Dropout probability in each conv block.
            prelu: PReLU slope sharing.
            spatial_size: Side of this stage's feature maps, needed when ``prelu="element"``.
            bn_eps: BatchNorm epsilon.
            bn_momentum: BatchNorm momentum (PyTorch convention).
        """
        super().__init__()
        self.up = (
            None
            if previous_channels is None
            else nn.ConvTranspose2d(previous_channels, previous_channels, kernel_size=2, stride=2)
        )
        self.channel_attention = (
            ChannelAttention(in_channels, bias=attention_bias) if channel_attention else None
        )
        blocks: list[nn.Module] = []
        channels = in_channels
        for width in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(channels, width, kernel_size=3, padding=1),
                    _prelu(prelu, width, spatial_size),
                    nn.BatchNorm2d(width, eps=bn_eps, momentum=bn_momentum),
                    nn.Dropout(dropout),
                )
            )
            channels = width
        self.blocks = nn.Sequential(*blocks)
        self.spatial_attention = SpatialAttention()
        self.norm = (
            nn.BatchNorm2d(channels, eps=bn_eps, momentum=bn_momentum)
            if bn_after_attention
            else None
        )
        self.out_channels = channels

    def forward(
        self,
        t1: Tensor,
        t2: Tensor,
        previous: Tensor | None = None,
        pooled: Descriptors | None = None,
    ) -> Tensor:
        """Fuse one scale.

        Args:
            t1: (B, c, h, w) T1 features at this scale.
            t2: (B, c, h, w) T2 features at this scale.
            previous: (B, p, h/2, w/2) previous stage's state, None for the first stage.
            pooled: Fixed channel-attention descriptors (see :meth:`refine`); None: pool the
                stage's own input.

        Returns:
            (B, out_channels, h, w) decoder state.
        """
        return self.refine(self.fuse(t1, t2, previous), pooled)

    def fuse(self, t1: Tensor, t2: Tensor, previous: Tensor | None = None) -> Tensor:
        """The stage's concatenated input: upsampled state (if any), T1, T2 features.

        This is what the channel attention pools over.
        """
        if self.up is not None and previous is not None:
            return torch.cat([self.up(previous), t1, t2], dim=1)
        return torch.cat([t1, t2], dim=1)

    def refine(self, x: Tensor, pooled: Descriptors | None = None) -> Tensor:
        """Channel attention (descriptors from ``x``, or ``pooled``), conv blocks, SA, [BN]."""
        if self.channel_attention is not None:
            x = self.channel_attention(x, pooled)
        x = self.spatial_attention(self.blocks(x))
        if self.norm is not None:
            x = self.norm(x)
        return x
