"""What the three fully convolutional networks of Daudt et al. share: encoder and decoder.

Daudt, Le Saux & Boulch, "Fully convolutional siamese networks for change detection", ICIP
2018 (arXiv:1810.08462); published code: github.com/rcdaudt/fully_convolutional_change_detection.

The encoder has four stages of 16, 32, 64 and 128 channels with 2, 2, 3 and 3 convolution
blocks (3x3 convolution, BatchNorm, ReLU, Dropout2d), each stage followed by a 2x2 max-pool;
its taps are the stage outputs before pooling. The decoder mirrors it: each stage doubles the
resolution with a 3x3 stride-2 transposed convolution, concatenates the skip of its level
(what the skip is, the networks decide) and runs the level's blocks, the last of which narrows
to the next level's width; a 3x3 convolution gives the one logit channel.

Where these blocks depart from the published code (the same for the three networks):

- The decoder's stride-1 convolutions are ``Conv2d`` where the published code uses
  ``ConvTranspose2d`` with the same kernel and padding: a transposed stride-1 convolution is
  a convolution with its kernel flipped and its channel axes swapped, so the functions and
  the parameter count are the same, written with the ordinary layer.
- One logit channel instead of two log-softmax channels: a two-class softmax is a sigmoid of
  the logits' difference, and the package's loss and prediction take one logit. This removes
  ``9 * 16 + 1 = 145`` parameters from the published counts.
- Inputs are padded to multiples of 16 by reflection and outputs cropped (as for every network
  here), where the published code pads each upsampled map by replication to its skip's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsifn.errors import ConfigError
from dsifn.models.baseline import BaselineConfig, BaselineNetwork

__all__ = [
    "FC_DEPTHS",
    "FC_WIDTHS",
    "ConvBlock",
    "FCConfig",
    "FCDecoder",
    "FCDecoderStage",
    "FCEncoder",
    "FCNetwork",
    "fc_decoder_widths",
]

FC_WIDTHS = (16, 32, 64, 128)  # channels of the encoder's four stages
FC_DEPTHS = (2, 2, 3, 3)  # convolution blocks per stage


@dataclass(frozen=True)
class FCConfig(BaselineConfig):
    """The fields of the three FC networks; defaults follow Daudt et al. 2018."""

    dropout: float = 0.2  # Dropout2d probability after every convolution but the classifier

    def __post_init__(self) -> None:
        """Check values."""
        super().__post_init__()
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {self.dropout}")


class ConvBlock(nn.Sequential):
    """3x3 convolution (with bias, as published), BatchNorm, ReLU, Dropout2d.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        dropout: Dropout2d probability.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Dropout2d(dropout),
        )


def _blocks(in_channels: int, widths: Sequence[int], dropout: float) -> nn.Sequential:
    """Convolution blocks of the given output widths, one after the other."""
    ins = [in_channels, *widths[:-1]]
    return nn.Sequential(*(ConvBlock(i, o, dropout) for i, o in zip(ins, widths, strict=True)))


class FCEncoder(nn.Module):
    """The encoder: stages of convolution blocks, each followed by 2x2 max-pooling.

    Args:
        in_channels: Bands of the input (both dates' for FC-EF, one date's for the Siamese).
        dropout: Dropout2d probability of every block.
        widths: Channels of each stage.
        depths: Blocks of each stage.

    Attributes:
        out_channels: Channels of each tap, finest first (the stage widths).
        depths: Blocks of each stage.
    """

    def __init__(
        self,
        in_channels: int,
        dropout: float,
        widths: Sequence[int] = FC_WIDTHS,
        depths: Sequence[int] = FC_DEPTHS,
    ) -> None:
        super().__init__()
        if len(widths) != len(depths) or min(depths) < 1:
            raise ConfigError(f"need one depth >= 1 per width; got {widths} and {depths}")
        ins = [in_channels, *widths[:-1]]
        self.stages = nn.ModuleList(
            _blocks(i, [w] * d, dropout) for i, w, d in zip(ins, widths, depths, strict=True)
        )
        self.out_channels = tuple(widths)
        self.depths = tuple(depths)

    def forward(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """Encode one image.

        Args:
            x: (B, in_channels, H, W), H and W multiples of 2 ** stages.

        Returns:
            The taps, finest first, tap k (B, out_channels[k], H / 2**k, W / 2**k), and the
            last one pooled, (B, out_channels[-1], H / 2**stages, W / 2**stages).
        """
        taps: list[Tensor] = []
        for stage in self.stages:
            x = stage(x)
            taps.append(x)
            x = F.max_pool2d(x, kernel_size=2)
        return taps, x


def fc_decoder_widths(widths: Sequence[int], depths: Sequence[int]) -> list[tuple[int, ...]]:
    """Output widths of each decoder stage's blocks, coarsest stage first.

    A stage has as many blocks as its encoder stage, all of its width except the last, which
    narrows to the next finer level's width; the finest stage's last block is the classifier,
    so that stage has one block fewer.

    Args:
        widths: Encoder stage widths, finest first.
        depths: Encoder stage depths, finest first.

    Returns:
        ``[(128, 128, 64), (64, 64, 32), (32, 16), (16,)]`` for the published network.
    """
    stages: list[tuple[int, ...]] = []
    for level in reversed(range(len(widths))):
        narrower = (widths[level - 1],) if level else ()
        stages.append((widths[level],) * (depths[level] - 1) + narrower)
    return stages


class FCDecoderStage(nn.Module):
    """Upsample the decoder state, concatenate a skip, run the level's blocks.

    Args:
        in_channels: Channels of the coarser decoder state.
        skip_channels: Channels of the skip.
        widths: Output widths of the blocks.
        dropout: Dropout2d probability of every block.

    Attributes:
        out_channels: Channels of the stage's output.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, widths: Sequence[int], dropout: float
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(
            in_channels, in_channels, kernel_size=3, stride=2, padding=1, output_padding=1
        )
        self.blocks = _blocks(in_channels + skip_channels, widths, dropout)
        self.out_channels = widths[-1]

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """Decode one level.

        Args:
            x: (B, in_channels, h/2, w/2) coarser state.
            skip: (B, skip_channels, h, w) skip of this level.

        Returns:
            (B, out_channels, h, w).
        """
        out: Tensor = self.blocks(torch.cat([self.up(x), skip], dim=1))
        return out


class FCDecoder(nn.Module):
    """The decoder, built from the encoder's widths and depths, and the classifier.

    Args:
        encoder: The encoder whose taps it decodes.
        skip_factor: Skip channels per tap channel: 1 for one map per level (FC-EF's taps,
            FC-Siam-diff's differences), 2 for both dates' taps concatenated (FC-Siam-conc).
        dropout: Dropout2d probability of every block.
    """

    def __init__(self, encoder: FCEncoder, skip_factor: int, dropout: float) -> None:
        super().__init__()
        widths = encoder.out_channels
        stages: list[FCDecoderStage] = []
        previous = widths[-1]
        plan = fc_decoder_widths(widths, encoder.depths)
        for level, blocks in zip(reversed(range(len(widths))), plan, strict=True):
            stage = FCDecoderStage(previous, skip_factor * widths[level], blocks, dropout)
            stages.append(stage)
            previous = stage.out_channels
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(previous, 1, kernel_size=3, padding=1)

    def forward(self, x: Tensor, skips: Sequence[Tensor]) -> Tensor:
        """Decode to logits.

        Args:
            x: (B, c, H / 2**n, W / 2**n) the pooled bottleneck of an n-stage encoder.
            skips: One map per level, finest first, as the encoder's taps are.

        Returns:
            (B, 1, H, W) logits.
        """
        for stage, skip in zip(self.stages, reversed(skips), strict=True):
            x = stage(x, skip)
        out: Tensor = self.head(x)
        return out


class FCNetwork(BaselineNetwork):
    """What each of the three FC networks is: an encoder and the decoder built from it.

    Args:
        config: The network's configuration.
        encoder_bands: Bands the encoder takes: both dates' for early fusion, one date's for
            the Siamese networks.
        skip_factor: Skip channels per tap channel (see :class:`FCDecoder`).
    """

    config: FCConfig

    def __init__(self, config: FCConfig, encoder_bands: int, skip_factor: int) -> None:
        super().__init__(config)
        self.encoder = FCEncoder(encoder_bands, config.dropout)
        self.decoder = FCDecoder(self.encoder, skip_factor, config.dropout)

    def siamese_logits(
        self, t1: Tensor, t2: Tensor, fuse: Callable[[Tensor, Tensor], Tensor]
    ) -> Tensor:
        """The Siamese networks' logits: each date encoded, their taps fused into the skips.

        Each date goes through the encoder on its own, as in the published code, so in
        training its BatchNorm layers normalise each date by that date's batch statistics.
        The decoder starts, as there too, from the second date's pooled bottleneck.

        Args:
            t1: (B, C, H, W) first date, H and W multiples of 16.
            t2: (B, C, H, W) second date.
            fuse: Makes one level's skip of the two dates' (B, c, h, w) taps.

        Returns:
            (B, 1, H, W) logits.
        """
        taps1, _ = self.encoder(t1)
        taps2, bottleneck = self.encoder(t2)
        skips = [fuse(a, b) for a, b in zip(taps1, taps2, strict=True)]
        out: Tensor = self.decoder(bottleneck, skips)
        return out
