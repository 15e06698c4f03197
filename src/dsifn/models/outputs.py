"""What a single-output change network returns.

:class:`~dsifn.models.dsifn.DSIFNOutput` holds DSIFN's five side outputs; the baselines have
one. Both are named tuples whose first field is ``stride1``, so prediction reads
``out.stride1`` from either, and :class:`~dsifn.losses.DeepSupervisionLoss` takes either as a
sequence of logit maps, finest first (``weights=(1.0,)`` for one output).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

__all__ = ["ChangeOutput"]


class ChangeOutput(NamedTuple):
    """The change map of a network with one output, as logits."""

    stride1: Tensor  # (B, 1, H, W): the change map
