"""Turning raw band values (uint8, uint16, float reflectance) into [0, 1] model input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dsifn.errors import ConfigError, DataError

__all__ = ["Scaling", "default_scaling", "fixed_scaling", "percentile_scaling"]


@dataclass(frozen=True)
class Scaling:
    """Per-band linear map ``clip((x - low) / (high - low), 0, 1)``, the same for both dates."""

    low: tuple[float, ...]  # per band, raw value mapped to 0
    high: tuple[float, ...]  # per band, raw value mapped to 1
    description: str  # recorded in the output's metadata

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Scale float32 (C, h, w) raw values to [0, 1]."""
        low = np.asarray(self.low, dtype=np.float32).reshape(-1, 1, 1)
        span = np.asarray(self.high, dtype=np.float32).reshape(-1, 1, 1) - low
        out: np.ndarray = np.subtract(x, low, dtype=np.float32)  # the one new array
        out /= span
        np.clip(out, 0.0, 1.0, out=out)
        return out


def fixed_scaling(divisor: float, bands: int) -> Scaling:
    """Divide every band by ``divisor`` (255 for uint8, 10000 for Sentinel-2 reflectance)."""
    if not divisor > 0:
        raise ConfigError(f"--scale must be positive; got {divisor}")
    return Scaling((0.0,) * bands, (float(divisor),) * bands, f"divide by {divisor:g}")


def default_scaling(dtype: str, bands: int) -> Scaling | None:
    """Scaling used when none is asked for: /255 for 8-bit data, else None (stretch)."""
    if np.dtype(dtype) == np.uint8:
        return fixed_scaling(255.0, bands)
    return None


def percentile_scaling(
    samples: Sequence[np.ndarray], low: float = 2.0, high: float = 98.0
) -> Scaling:
    """Per-band percentile stretch computed from both dates together.

    Args:
        samples: One (C, N) array of valid raw values per date (a decimated read).
        low: Lower percentile, mapped to 0.
        high: Upper percentile, mapped to 1.

    Returns:
        The scaling; a band with no spread gets a span of one raw unit.

    Raises:
        ConfigError: If the percentiles are not 0 <= low < high <= 100.
        DataError: If there are no valid pixels.
    """
    if not 0.0 <= low < high <= 100.0:
        raise ConfigError(f"--stretch needs 0 <= low < high <= 100; got {low},{high}")
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
