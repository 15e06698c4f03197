"""A scene prediction: what it is asked (:class:`SceneOptions`), decided, and wrote.

:func:`dsifn.inference.scene.predict_scene` takes one :class:`SceneOptions` (or its fields as
keyword arguments), makes one :class:`ScenePlan` (:func:`dsifn.inference.scene.plan_scene`)
and returns a :class:`SceneResult`; all three are re-exported by :mod:`dsifn.inference.scene`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from dsifn._validation import check_choice
from dsifn.contract import check_threshold
from dsifn.devices import Precision, Runtime
from dsifn.errors import ConfigError
from dsifn.scaling import ScalingRule

if TYPE_CHECKING:
    from dsifn.contract import InputContract
    from dsifn.inference.scene_attention import WindowGrid
    from dsifn.inference.tiling import TileGrid

__all__ = [
    "AttentionMode",
    "OutputDtype",
    "OutputMode",
    "PathLike",
    "SceneOptions",
    "ScenePlan",
    "SceneResult",
    "TileLoop",
]

OutputMode = Literal["probability", "mask", "both"]
AttentionMode = Literal["tile", "scene"]
OutputDtype = Literal["float32", "uint8"]
PathLike = str | os.PathLike[str]
# A tile loop: (runner, pair, tiles, write_rows, *, batch_size, tta, progress) -> None
# (dsifn.inference.pipeline.run_tiles, dsifn.inference.scene_attention.run_scene_attention).
TileLoop = Callable[..., Any]


@dataclass(frozen=True)
class SceneOptions:
    """How :func:`~dsifn.inference.scene.predict_scene` tiles, scales and writes.

    Defaults suit a CPU.
    """

    # None: the model's fixed size, else the tile size it trained on, else 512 (scene
    # attention: 1024).
    tile_size: int | None = None
    overlap: int | None = None  # pixels shared by neighbouring tiles; None: tile_size // 8
    batch_size: int = 1  # tiles per forward pass (1 keeps DSIFN on a CPU under 2 GiB)
    tta: bool = False  # average the 8 flips/rotations of each tile
    # Channel attention's descriptors: pooled over each tile ("tile", fast), or over the whole
    # scene ("scene": equals the network run on the whole scene; one more pass per attention
    # stage, windows with 288-pixel margins; see dsifn.inference.scene_attention).
    attention: AttentionMode = "tile"
    mode: OutputMode = "probability"  # bands written: probability, binary mask, or both
    dtype: OutputDtype = "float32"  # probability as float32, or uint8 round(p * 254)
    threshold: float | None = None  # decision threshold; None: the model's recorded one
    cog: bool = False  # write a Cloud-Optimized GeoTIFF (with overviews)
    # How pixels become input; None: as the model's input contract records (dsifn.contract).
    bands: tuple[int, ...] | tuple[str, ...] | None = None  # numbers, or names (B04...)
    scale: float | None = None  # fixed divisor of raw values (10000 for Sentinel-2 L1C)
    # Digital numbers added first, replacing the offset the files state (-1000: Sentinel-2
    # of baseline 04.00 or later that states none): one for both dates, or (T1, T2) with None
    # for a date's own; None: the files' own.
    offset: float | tuple[float | None, float | None] | None = None
    stretch: tuple[float, float] | None = None  # per-band percentile stretch from both dates
    align: bool = False  # resample T2 onto T1's grid instead of refusing a mismatch
    polygons: PathLike | None = None  # also write changed regions (.gpkg or .geojson)
    min_area: float = 0.0  # drop polygons smaller than this (CRS units squared)
    quicklook: PathLike | None = None  # also write a before | after | change PNG
    overwrite: bool = False  # replace existing outputs
    progress: bool = True  # show a progress bar over tiles
    runtime: Runtime = "auto"  # for a model given as a path: "auto" chooses by the file
    device: str = "auto"  # for a model given as a path
    precision: Precision = "auto"  # for a model given as a path (torch runtime)

    def __post_init__(self) -> None:
        """Check values users can get wrong."""
        check_choice("mode", self.mode, get_args(OutputMode))
        check_choice("dtype", self.dtype, get_args(OutputDtype))
        check_choice("attention", self.attention, get_args(AttentionMode))
        if self.attention == "scene" and self.overlap is not None:
            raise ConfigError(
                "with scene-wide attention the overlap follows from the model's receptive "
                f"field, so it cannot be set (`overlap={self.overlap}`)"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1; got {self.batch_size}")
        if self.threshold is not None:
            check_threshold(self.threshold)
        ScalingRule.of(self.scale, self.stretch)  # refuses values that make no sense
        if self.min_area < 0:
            raise ConfigError(f"min area must not be negative; got {self.min_area}")
        if self.overlap is not None and self.overlap < 0:
            raise ConfigError(f"overlap must not be negative; got {self.overlap}")


@dataclass(frozen=True)
class SceneResult:
    """What :func:`~dsifn.inference.scene.predict_scene` wrote."""

    output: Path  # the change map
    polygons: Path | None  # the polygon file, if asked for
    quicklook: Path | None  # the quicklook PNG, if asked for
    polygon_count: int | None  # polygons written
    tiles: int  # tiles predicted (before test-time augmentation)
    threshold: float  # decision threshold used
    tags: dict[str, str]  # metadata recorded in the output


@dataclass(frozen=True)
class ScenePlan:
    """Everything decided about one scene, once; inference and output writing only read it."""

    contract: InputContract  # how pixels were read and the decision threshold
    tiles: TileGrid | WindowGrid  # plain tiles, or scene-wide attention's windows
    run: TileLoop  # the tile loop that predicts ``tiles``
    plain: bool  # plain images: a PNG map without georeference
    tags: dict[str, str]  # what the map records about how it was made
