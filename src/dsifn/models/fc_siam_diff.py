"""FC-Siam-diff: the Siamese fully convolutional network of Daudt et al. that subtracts.

Daudt, Le Saux & Boulch, "Fully convolutional siamese networks for change detection", ICIP
2018 (arXiv:1810.08462); published code: ``siamunet_diff.py`` of
github.com/rcdaudt/fully_convolutional_change_detection.

One encoder (:mod:`.fc_blocks`) with shared weights encodes each date; the decoder's skip at
each level is the absolute difference of the two dates' taps. As in the published code, the
decoder starts from the second date's pooled bottleneck, and each date goes through the
encoder on its own (BatchNorm statistics per date in training). Other departures are those of
:mod:`.fc_blocks` (decoder convolutions as ``Conv2d``, one logit channel, reflection padding
to multiples of 16).

Parameters: 1,350,001 for 3 bands, 1,349,569 + 144 C for C bands per date; the published
code, with its two output channels, has 1,350,146 for 3 bands (the paper's "1.35 M").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from dsifn.models.baseline import configured
from dsifn.models.fc_blocks import FCConfig, FCNetwork

__all__ = ["FCSiamDiff", "FCSiamDiffConfig"]


@dataclass(frozen=True)
class FCSiamDiffConfig(FCConfig):
    """Everything needed to rebuild an FC-Siam-diff. Defaults follow Daudt et al. 2018."""

    name: ClassVar[str] = "fc_siam_diff"


class FCSiamDiff(FCNetwork):
    """The FC-Siam-diff change-detection network (Daudt et al., ICIP 2018).

    Example:
        >>> model = FCSiamDiff()
        >>> model(torch.rand(1, 3, 37, 53), torch.rand(1, 3, 37, 53)).stride1.shape
        torch.Size([1, 1, 37, 53])
    """

    config: FCSiamDiffConfig

    def __init__(self, config: FCSiamDiffConfig | None = None, **options: Any) -> None:
        """Build the network.

        Args:
            config: Full configuration; ``options`` override single fields of it.
            **options: Fields of :class:`FCSiamDiffConfig`, e.g. ``in_channels=4``.
        """
        cfg = configured(FCSiamDiffConfig, config, options)
        super().__init__(cfg, encoder_bands=cfg.in_channels, skip_factor=1)

    def logits(self, t1: Tensor, t2: Tensor) -> Tensor:
        """(B, 1, H, W) logits of (B, C, H, W) dates, H and W multiples of 16."""
        return self.siamese_logits(t1, t2, lambda a, b: (a - b).abs())
