"""GeoTIFFs and cheap stand-in models built in the tests (no files from outside).

Imported by the tests of this folder (pytest puts the folder on sys.path)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from dsifn.contract import InputContract
from dsifn.models.normalization import Normalization

# A real projected CRS: UTM zone 33N, 10 m pixels.
CRS = "EPSG:32633"
ORIGIN = (500000.0, 4600000.0)
PIXEL = 10.0


def write_geotiff(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = CRS,
    transform: Any = None,
    nodata: float | None = 0,
    tiled: bool = True,
) -> Path:
    """Write (C, H, W) data as a compressed GeoTIFF."""
    count, height, width = data.shape
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": data.dtype.name,
        "crs": crs,
        "transform": transform or from_origin(*ORIGIN, PIXEL, PIXEL),
        "nodata": nodata,
        "compress": "deflate",
    }
    if tiled:
        profile.update(tiled=True, blockxsize=128, blockysize=128)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def uint16_scene(seed: int, height: int, width: int, bands: int = 3) -> np.ndarray:
    """Smooth-ish uint16 reflectances (1..10000) with no zero (0 is nodata)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(1, 10000, (bands, height, width))
    return base.astype(np.uint16)


class LocalRunner:
    """A purely local stand-in model: two 3x3 convolutions (receptive radius 2), sigmoid.

    Unlike DSIFN it has no global pooling, so tiled and whole-image outputs must agree.
    """

    def __init__(self, bands: int = 3, tile_size: int | None = None) -> None:
        torch.manual_seed(1)
        self.net = nn.Sequential(
            nn.Conv2d(2 * bands, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 1, 3, padding=1)
        ).eval()
        self.in_channels = bands
        self.tile_size = tile_size
        self.normalization = Normalization(mean=(0.5,) * bands, std=(0.25,) * bands)
        self.threshold = 0.5
        self.contract = InputContract(bands, self.normalization)
        self.meta: dict[str, Any] = {}
        self.calls = 0
        self.fail_after: int | None = None

    def __call__(self, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        with torch.no_grad():
            x = torch.cat([torch.from_numpy(t1), torch.from_numpy(t2)], dim=1)
            return torch.sigmoid(self.net(x)).numpy()


class BandRunner:
    """Stand-in whose 'probability' is T2's first band scaled to [0, 1] (identity norm)."""

    def __init__(self, bands: int = 1) -> None:
        self.in_channels = bands
        self.tile_size: int | None = None
        self.normalization = Normalization(mean=(0.0,) * bands, std=(1.0,) * bands)
        self.threshold = 0.5
        self.contract = InputContract(bands, self.normalization)
        self.meta: dict[str, Any] = {}

    def __call__(self, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(t2[:, :1], dtype=np.float32)


class AttentionStandIn(LocalRunner):
    """:class:`LocalRunner` times a scene-wide factor, so scene-wide attention runs its passes.

    One "attention stage" (0) pools |T2 - T1| per channel; the prediction is scaled by the
    sigmoid of the pooled means' average. Receptive radius 2, as LocalRunner's.
    """

    attention_stages = (0,)
    receptive_radius = 2

    def __call__(self, t1: np.ndarray, t2: np.ndarray, pooled: Any = None) -> np.ndarray:
        out = super().__call__(t1, t2)
        factor = 1.0 if not pooled else float(torch.sigmoid(pooled[0][0].mean()))
        return out * np.float32(factor)

    def attention_statistics(
        self, t1: np.ndarray, t2: np.ndarray, stage: int, pooled: Any, mask: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        x = torch.from_numpy(np.abs(t2 - t1))
        cells = torch.from_numpy(np.ascontiguousarray(mask))[:, None]
        total = torch.where(cells, x, 0.0).sum(dim=(0, 2, 3), dtype=torch.float64)
        peak = torch.where(cells, x, -torch.inf).amax(dim=(0, 2, 3))
        return total, peak, int(cells.sum())
