"""FC-EF: the early-fusion fully convolutional network of Daudt et al.

Daudt, Le Saux & Boulch, "Fully convolutional siamese networks for change detection", ICIP
2018 (arXiv:1810.08462); published code: ``unet.py`` of
github.com/rcdaudt/fully_convolutional_change_detection.

The two dates are stacked along the channels into one 2C-band image and go through a U-Net
(:mod:`.fc_blocks`): an encoder of 16-32-64-128 channels and a decoder whose skips are the
encoder's own taps. It departs from the published code only as :mod:`.fc_blocks` says (decoder
convolutions as ``Conv2d``, one logit channel, reflection padding to multiples of 16).

Parameters: 1,350,433 for 3 bands, 1,349,569 + 288 C for C bands per date; the published
code, with its two output channels, has 1,350,578 for 3 bands (the paper's "1.35 M").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from dsifn.models.baseline import configured
from dsifn.models.fc_blocks import FCConfig, FCNetwork

__all__ = ["FCEF", "FCEFConfig"]


@dataclass(frozen=True)
class FCEFConfig(FCConfig):
    """Everything needed to rebuild an FC-EF. Defaults follow Daudt et al. 2018."""

    name: ClassVar[str] = "fc_ef"


class FCEF(FCNetwork):
    """The FC-EF change-detection network (Daudt et al., ICIP 2018).

    Example:
        >>> model = FCEF()
        >>> model(torch.rand(1, 3, 37, 53), torch.rand(1, 3, 37, 53)).stride1.shape
        torch.Size([1, 1, 37, 53])
    """

    config: FCEFConfig

    def __init__(self, config: FCEFConfig | None = None, **options: Any) -> None:
        """Build the network.

        Args:
            config: Full configuration; ``options`` override single fields of it.
            **options: Fields of :class:`FCEFConfig`, e.g. ``in_channels=4``.
        """
        cfg = configured(FCEFConfig, config, options)
        super().__init__(cfg, encoder_bands=2 * cfg.in_channels, skip_factor=1)

    def logits(self, t1: Tensor, t2: Tensor) -> Tensor:
        """(B, 1, H, W) logits of (B, C, H, W) dates, H and W multiples of 16."""
        taps, bottleneck = self.encoder(torch.cat([t1, t2], dim=1))
        out: Tensor = self.decoder(bottleneck, taps)
        return out
