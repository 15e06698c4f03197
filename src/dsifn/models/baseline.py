"""What the baseline networks share: their configuration's core and the handling of a pair.

A baseline (FC-EF, FC-Siam-conc, FC-Siam-diff, CDNet) is a :class:`BaselineNetwork`: it takes
both dates, checks them, pads them by reflection to multiples of 16 (:mod:`.padding`), computes
one logit map in :meth:`BaselineNetwork.logits` and crops it back, returning a
:class:`~dsifn.models.outputs.ChangeOutput`. Its configuration derives from
:class:`BaselineConfig`, whose ``name`` is the ``model.name`` that selects it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from torch import Tensor, nn

from dsifn._config import Config, plain, settle
from dsifn.errors import ConfigError
from dsifn.models.outputs import ChangeOutput, strides_of
from dsifn.models.padding import check_pair, crop_to, reflect_pad
from dsifn.normalization import IMAGENET_RGB, Normalization, check_input_bands

__all__ = ["BaselineConfig", "BaselineNetwork", "configured"]

C = TypeVar("C", bound="BaselineConfig")


@dataclass(frozen=True)
class BaselineConfig(Config):
    """The fields every baseline has. Subclasses add their own and set ``name``.

    Attributes:
        name: The ``model.name`` that selects the network (``"fc_ef"``, ``"cdnet"``...).
    """

    in_channels: int = 3  # bands of each date's image
    normalization: Normalization | None = (
        None  # None: ImageNet statistics cycled over the bands (see input_normalization)
    )

    section: ClassVar[str] = "model"
    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        """Check values."""
        settle(self)
        check_input_bands(self.in_channels, self.normalization)

    @property
    def input_normalization(self) -> Normalization:
        """The normalisation to apply: the configured one, else ImageNet's, cycled.

        The same default as DSIFN's ``"pytorch"`` variant, so every network of the package
        sees the same input when compared. The baselines train from scratch; statistics of
        the data (``dsifn stats``) are the better choice for other sensors.
        """
        if self.normalization is not None:
            return self.normalization
        return IMAGENET_RGB.for_bands(self.in_channels)

    @property
    def input_size(self) -> int | None:
        """The fixed square input side the network needs: None, any side >= 16 works."""
        return None

    def to_dict(self) -> dict[str, Any]:
        """Plain, ``weights_only``-safe dictionary; tuples stay tuples, as checkpoints hold them."""
        out: dict[str, Any] = plain(self, keep_tuples=True)
        return out


def configured(kind: type[C], config: C | None, options: Mapping[str, Any]) -> C:
    """The configuration a network's constructor was given: ``config`` with ``options`` set.

    Args:
        kind: The network's configuration class; its defaults stand in for ``config=None``.
        config: Full configuration, or None.
        options: Fields overriding single values of it.

    Raises:
        ConfigError: If ``config`` is of another class (say an FC-EF's given to FC-Siam-diff).
    """
    base = kind() if config is None else config
    if type(base) is not kind:
        raise ConfigError(f"expected a {kind.__name__}; got a {type(base).__name__}")
    return dataclasses.replace(base, **options) if options else base


class BaselineNetwork(nn.Module):
    """A network with one change map: checks, pads and crops around :meth:`logits`.

    Attributes:
        config: The configuration it was built from.
        checkpoint_meta: What a checkpoint recorded besides weights (threshold, provenance),
            as on :class:`~dsifn.models.DSIFN`.
    """

    config: BaselineConfig
    output_strides: ClassVar[tuple[int, ...]] = strides_of(ChangeOutput)  # (1,): one map

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self.config = config
        self.checkpoint_meta: dict[str, Any] = {}

    def forward(self, t1: Tensor, t2: Tensor) -> ChangeOutput:
        """Predict change logits for a batch of image pairs.

        Args:
            t1: (B, C, H, W) normalised image of the first date, H, W >= 16.
            t2: (B, C, H, W) normalised image of the second date.

        Returns:
            The (B, 1, H, W) logit map.
        """
        check_pair(t1, t2, self.config.in_channels)
        height, width = t1.shape[-2:]
        logits = self.logits(reflect_pad(t1), reflect_pad(t2))
        return ChangeOutput(crop_to(logits, height, width))

    def logits(self, t1: Tensor, t2: Tensor) -> Tensor:
        """The network proper, on a checked pair with sides that are multiples of 16.

        Args:
            t1: (B, C, H, W) first date.
            t2: (B, C, H, W) second date.

        Returns:
            (B, 1, H, W) logits.
        """
        raise NotImplementedError
