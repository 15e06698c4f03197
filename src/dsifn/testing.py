"""Stand-ins for tests and benchmarks: one cheap runner and one fake-scene writer.

Tests of the tile loop, outputs and commands, and the benchmarks of everything around the
model, need a model that costs (almost) nothing and scenes of any size. They all use these, so
a change to the runner interface or the readers meets one stand-in, not one per place.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from dsifn.contract import InputContract
from dsifn.normalization import Normalization

__all__ = ["StandIn", "StandInRunner", "fake_scene", "write_pair", "write_scene"]

# What the stand-in computes:
# - "constant": 0.5 everywhere; costs nothing (the pipeline's own cost).
# - "conv": two 3x3 convolutions and a sigmoid, receptive radius 2 (tiled equals whole).
# - "difference": sigmoid of the 5x5-smoothed mean |T2 - T1|, so changes are blobs.
# - "band": T2's first band as it arrives (with the identity normalisation: its [0, 1] value).
StandIn = Literal["constant", "conv", "difference", "band"]


class StandInRunner:
    """A :class:`~dsifn.inference.runner.TileRunner` whose model is a cheap function.

    Args:
        bands: Bands per date.
        kind: What it computes (:data:`StandIn`).
        tile_size: The fixed tile side it takes, or None for any.
        contract: Its input contract; None: ``bands`` bands, mean 0.5 and std 0.25 (the
            identity normalisation for ``"band"``).

    Attributes:
        calls: How many batches it predicted.
        shapes: The shapes of the T1 batches it was given.
        fail_after: Raise after this many calls (a simulated crash); None: never.
    """

    def __init__(
        self,
        bands: int = 3,
        kind: StandIn = "conv",
        *,
        tile_size: int | None = None,
        contract: InputContract | None = None,
    ) -> None:
        mean, std = (0.0, 1.0) if kind == "band" else (0.5, 0.25)
        normalization = Normalization(mean=(mean,) * bands, std=(std,) * bands)
        self.contract = contract or InputContract(bands, normalization)
        self.kind = kind
        self.tile_size = tile_size
        self.meta: dict[str, Any] = {}
        self.calls = 0
        self.shapes: list[tuple[int, ...]] = []
        self.fail_after: int | None = None
        generator = torch.Generator().manual_seed(1)
        self.net = nn.Sequential(
            nn.Conv2d(2 * bands, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, 1, 3, padding=1)
        ).eval()
        with torch.no_grad():
            for parameter in self.net.parameters():
                parameter.copy_(torch.rand(parameter.shape, generator=generator) * 0.4 - 0.2)

    def __call__(self, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        """float32 (B, 1, h, w) "probabilities" of normalised (B, C, h, w) tiles."""
        self.calls += 1
        self.shapes.append(tuple(t1.shape))
        if self.fail_after is not None and self.calls > self.fail_after:
            raise RuntimeError("simulated crash")
        if self.kind == "constant":
            return np.full((t1.shape[0], 1, *t1.shape[-2:]), 0.5, dtype=np.float32)
        if self.kind == "band":
            return np.ascontiguousarray(t2[:, :1], dtype=np.float32)
        a, b = torch.from_numpy(t1), torch.from_numpy(t2)
        with torch.inference_mode():
            if self.kind == "difference":
                diff = (a - b).abs().mean(1, keepdim=True)
                smooth = nn.functional.avg_pool2d(diff, 5, stride=1, padding=2)
                return torch.sigmoid(4.0 * (smooth - 1.5)).numpy()
            return torch.sigmoid(self.net(torch.cat([a, b], dim=1))).numpy()


def fake_scene(
    seed: int,
    height: int,
    width: int,
    bands: int = 3,
    dtype: str = "uint16",
    *,
    top: int = 0,
    left: int = 0,
) -> np.ndarray:
    """A textured (bands, height, width) window of a fake scene, never 0 (0 is nodata).

    Smooth waves plus noise, in 1..10000 for uint16 and 1..255 for uint8; the waves depend on
    the window's place (``top``, ``left``), so windows written one by one make one scene.
    """
    rng = np.random.default_rng((seed, top, left))
    y, x = np.mgrid[top : top + height, left : left + width]
    waves = 0.5 + 0.3 * np.sin(x / 97.0 + seed) * np.cos(y / 131.0)
    values = waves[None] + rng.uniform(-0.15, 0.15, (bands, height, width))
    top_value = 255 if dtype == "uint8" else 10000
    scene: np.ndarray = np.clip(np.rint(values * top_value), 1, top_value).astype(dtype)
    return scene


def write_scene(
    path: Path,
    height: int,
    width: int,
    *,
    bands: int = 3,
    dtype: str = "uint16",
    seed: int = 0,
    nodata: float | None = 0,
    crs: str = "EPSG:32633",
    pixel: float = 10.0,
    block: int = 1024,
) -> Path:
    """Write a fake scene (:func:`fake_scene`) as a tiled GeoTIFF, a block at a time.

    Memory stays at one block whatever the scene's size, so benchmarks can write scenes of
    tens of thousands of pixels a side.
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": dtype,
        "crs": crs,
        "transform": from_origin(500000.0, 4600000.0, pixel, pixel),
        "nodata": nodata,
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, height, block):
            for col in range(0, width, block):
                h, w = min(block, height - row), min(block, width - col)
                window = fake_scene(seed, h, w, bands, dtype, top=row, left=col)
                dst.write(window, window=Window(col, row, w, h))
    return path


def write_pair(folder: Path, side: int, *, seed: int = 1, **options: Any) -> tuple[Path, Path]:
    """Write a square pair of fake scenes, ``t1.tif`` (``seed``) and ``t2.tif`` (``seed + 1``).

    Args:
        folder: Where the two files go.
        side: Their height and width.
        seed: T1's seed; T2 has the next.
        **options: The other arguments of :func:`write_scene` (``bands``, ``dtype``, ...).
    """
    return (
        write_scene(folder / "t1.tif", side, side, seed=seed, **options),
        write_scene(folder / "t2.tif", side, side, seed=seed + 1, **options),
    )
