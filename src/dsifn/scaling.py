"""Raw band values (uint8, uint16, float reflectance) to [0, 1]: the one scaling of the package.

Training, evaluation and prediction all scale through this module, so a model sees the same
values for the same radiance whether it reads a training crop or a 20000-pixel scene. A
:class:`ScalingRule` says which rule applies (it is what a checkpoint's input contract
records); :meth:`ScalingRule.resolve` turns it into a :class:`Scaling`, the per-band linear
map applied to pixels.

Rules:

- ``"dtype"`` (the default): integers are divided by their type's maximum (uint8 by 255,
  uint16 by 65535), booleans are 0/1, floating-point values are taken as they are. It depends
  on nothing but the file's type, so a crop and the scene it came from scale alike.
- ``"fixed"``: every band divided by ``scale`` (10000 for Sentinel-2 L1C reflectance, 4095
  for 12-bit sensors).
- ``"stretch"``: a per-band percentile stretch computed from the valid pixels of both dates of
  the pair being read (a decimated read for scenes). It depends on the image's content, so a
  model trained with it should be used on images of about the size it was trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from dsifn._validation import check_choice
from dsifn.errors import ConfigError, DataError

__all__ = ["DEFAULT_STRETCH", "Rule", "Scaling", "ScalingRule", "percentile_scaling"]

Rule = Literal["dtype", "fixed", "stretch"]

# Percentiles of the stretch when none are given.
DEFAULT_STRETCH = (2.0, 98.0)


@dataclass(frozen=True)
class Scaling:
    """Per-band linear map ``(x - low) / (high - low)``, the same for both dates.

    Values are clipped to [0, 1] when ``clip`` is set (every rule but floating-point data
    under ``"dtype"``, which is taken as it is).
    """

    low: tuple[float, ...]  # per band, raw value mapped to 0
    high: tuple[float, ...]  # per band, raw value mapped to 1
    description: str  # recorded in the output's metadata
    clip: bool = True  # clip the result to [0, 1]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Scale (C, ...) raw values to float32 [0, 1]; returns a new array."""
        shape = (-1,) + (1,) * (x.ndim - 1)
        low = np.asarray(self.low, dtype=np.float32).reshape(shape)
        span = np.asarray(self.high, dtype=np.float32).reshape(shape) - low
        out: np.ndarray = np.subtract(x, low, dtype=np.float32)  # the one new array
        out /= span
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out


@dataclass(frozen=True)
class ScalingRule:
    """Which scaling applies: the rule and its values (see the module docstring)."""

    rule: Rule = "dtype"
    scale: float | None = None  # "fixed": the raw value mapped to 1
    stretch: tuple[float, float] | None = None  # "stretch": low and high percentiles

    def __post_init__(self) -> None:
        """Check that the values fit the rule."""
        check_choice("scaling rule", self.rule, get_args(Rule))
        if self.rule == "fixed":
            if self.scale is None or not (math.isfinite(self.scale) and self.scale > 0):
                raise ConfigError(f"scale must be a positive finite number; got {self.scale}")
            object.__setattr__(self, "scale", float(self.scale))
        elif self.scale is not None:
            raise ConfigError(f"scale goes with the 'fixed' rule, not {self.rule!r}")
        if self.rule == "stretch":
            low, high = tuple(float(v) for v in (self.stretch or DEFAULT_STRETCH))
            if not 0.0 <= low < high <= 100.0:
                raise ConfigError(f"stretch needs 0 <= low < high <= 100; got {low:g},{high:g}")
            object.__setattr__(self, "stretch", (low, high))
        elif self.stretch is not None:
            raise ConfigError(f"stretch goes with the 'stretch' rule, not {self.rule!r}")

    @classmethod
    def of(cls, scale: float | None = None, stretch: Sequence[float] | None = None) -> ScalingRule:
        """The rule a ``scale`` or ``stretch`` option asks for (neither: ``"dtype"``)."""
        if scale is not None and stretch is not None:
            raise ConfigError("give either scale or stretch, not both")
        if scale is not None:
            return cls("fixed", scale=scale)
        if stretch is not None:
            if len(stretch) != 2:
                raise ConfigError(f"stretch takes two percentiles (low, high); got {stretch}")
            return cls("stretch", stretch=(float(stretch[0]), float(stretch[1])))
        return cls()

    def describe(self) -> str:
        """``"divide by 10000"``, ``"percentile stretch 2-98"``, ``"by data type"``."""
        if self.rule == "fixed":
            return f"scale {self.scale:g}"
        if self.rule == "stretch":
            low, high = self.stretch or DEFAULT_STRETCH
            return f"percentile stretch {low:g}-{high:g}"
        return "scale by data type (uint8 / 255, uint16 / 65535, floats as they are)"

    def to_dict(self) -> dict[str, Any]:
        """Plain values for checkpoints and model metadata."""
        return {
            "rule": self.rule,
            "scale": self.scale,
            "stretch": None if self.stretch is None else list(self.stretch),
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ScalingRule:
        """Rebuild from :meth:`to_dict`'s output."""
        stretch = values.get("stretch")
        return cls(
            rule=values.get("rule", "dtype"),
            scale=None if values.get("scale") is None else float(values["scale"]),
            stretch=None if stretch is None else (float(stretch[0]), float(stretch[1])),
        )

    def resolve(
        self, dtype: str | np.dtype[Any], bands: int, samples: Callable[[], Sequence[np.ndarray]]
    ) -> Scaling:
        """The scaling of one pair (or scene).

        Args:
            dtype: The raw values' type (of both dates together).
            bands: Bands per date.
            samples: Called for ``"stretch"`` only: one (C, N) array of valid raw values per
                date.

        Returns:
            The per-band map.
        """
        if self.rule == "fixed":
            assert self.scale is not None
            return _divide(self.scale, bands, f"divide by {self.scale:g}")
        if self.rule == "stretch":
            return percentile_scaling(samples(), *(self.stretch or DEFAULT_STRETCH))
        kind = np.dtype(dtype)
        if kind == np.bool_:
            return _divide(1.0, bands, "booleans as 0/1")
        if np.issubdtype(kind, np.floating):
            return Scaling((0.0,) * bands, (1.0,) * bands, "floats as they are", clip=False)
        top = float(np.iinfo(kind).max)
        return _divide(top, bands, f"divide by {top:g} ({kind.name} maximum)")


def _divide(divisor: float, bands: int, description: str) -> Scaling:
    return Scaling((0.0,) * bands, (float(divisor),) * bands, description)


def percentile_scaling(
    samples: Sequence[np.ndarray], low: float = 2.0, high: float = 98.0
) -> Scaling:
    """Per-band percentile stretch computed from both dates together.

    Args:
        samples: One (C, N) array of valid raw values per date.
        low: Lower percentile, mapped to 0.
        high: Upper percentile, mapped to 1.

    Returns:
        The scaling; a band with no spread gets a span of one raw unit.

    Raises:
        DataError: If there are no valid pixels.
    """
    values = np.concatenate([np.asarray(s, dtype=np.float64) for s in samples], axis=1)
    if values.shape[1] == 0:
        raise DataError("no valid pixels to compute the percentile stretch from")
    lo = np.percentile(values, low, axis=1)
    hi = np.percentile(values, high, axis=1)
    hi = np.where(hi > lo, hi, lo + 1.0)
    return Scaling(
        tuple(float(v) for v in lo),
        tuple(float(v) for v in hi),
        f"percentile stretch {low:g}-{high:g} per band from both dates: low "
        + ",".join(f"{v:g}" for v in lo)
        + " high "
        + ",".join(f"{v:g}" for v in hi),
    )
