"""What a single-output change network returns.

:class:`~dsifn.models.dsifn.DSIFNOutput` holds DSIFN's five side outputs; the baselines have
one. Both are named tuples whose first field is ``stride1``, so prediction reads
``out.stride1`` from either, and :class:`~dsifn.losses.DeepSupervisionLoss` takes either as a
sequence of logit maps, finest first (``weights=(1.0,)`` for one output).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

__all__ = ["ChangeOutput", "strides_of"]


class ChangeOutput(NamedTuple):
    """The change map of a network with one output, as logits."""

    stride1: Tensor  # (B, 1, H, W): the change map


def strides_of(output: type[tuple[Any, ...]]) -> tuple[int, ...]:
    """The stride of each map of a network's output type, finest first, from its field names.

    Args:
        output: A named tuple class whose fields are ``stride1``, ``stride2``...

    Returns:
        ``(1,)`` for :class:`ChangeOutput`, ``(1, 2, 4, 8, 16)`` for DSIFN's.
    """
    fields: tuple[str, ...] = getattr(output, "_fields", ())
    return tuple(int(name.removeprefix("stride")) for name in fields)
