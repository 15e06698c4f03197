"""A synthetic bi-temporal change-detection dataset, for the demo and for tests.

Each pair shows a small patch of land: a textured ground of vegetation and soil, roads and
buildings (rectangular roofs of varied colours with a cast shadow). Between the two dates some
buildings and roads appear or vanish: that, and only that, is labelled change. The second date
also carries the nuisance real pairs have and a model must learn to ignore: a global
illumination change, a season-like colour shift of the vegetation and soil, a misregistration
of the whole image by a pixel or two, and sensor noise.

Generation is a pure function of a seed (:func:`generate_pair`); :func:`write_synthetic_dataset`
writes pairs to disk in the LEVIR-CD layout (``{train,val,test}/{A,B,label}/*.png``, masks
0/255) so that the normal dataset reader reads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from dsifn.errors import ConfigError, OutputExistsError
from dsifn.progress import progress_bar

__all__ = [
    "MARKER",
    "SPLITS",
    "SceneObject",
    "SyntheticConfig",
    "SyntheticPair",
    "generate_pair",
    "write_synthetic_dataset",
]

# File written at the dataset root; its presence is what allows --overwrite to replace a folder.
MARKER = "synthetic.json"
SPLITS = ("train", "val", "test")

# Roof colours (RGB in [0, 1]): red tiles, grey concrete, white, blue sheet metal, brown.
_ROOFS = np.array(
    [
        [0.62, 0.22, 0.17],
        [0.55, 0.55, 0.57],
        [0.86, 0.85, 0.82],
        [0.25, 0.38, 0.60],
        [0.45, 0.32, 0.22],
    ],
    dtype=np.float32,
)
_VEGETATION = np.array([0.22, 0.42, 0.18], dtype=np.float32)
_SOIL = np.array([0.55, 0.46, 0.33], dtype=np.float32)
_ROAD = np.array([0.36, 0.36, 0.38], dtype=np.float32)
# Direction of the season shift: green vegetation turns yellow-brown, soil turns paler.
_SEASON_VEGETATION = np.array([0.35, 0.05, -0.08], dtype=np.float32)
_SEASON_SOIL = np.array([0.10, 0.10, 0.12], dtype=np.float32)


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes, object counts and nuisance strengths of the synthetic dataset."""

    size: int = 64  # side of every image in pixels
    train: int = 300  # pairs in the train split
    val: int = 60  # pairs in the val split
    test: int = 60  # pairs in the test split
    buildings: tuple[int, int] = (3, 7)  # buildings per scene, inclusive range
    building_size: tuple[float, float] = (0.12, 0.28)  # building side as a fraction of `size`
    roads: tuple[int, int] = (0, 2)  # roads per scene, inclusive range
    change_probability: float = 0.4  # chance that an object exists at one date only
    illumination: float = 0.25  # T2 brightness gain drawn from [1 - x, 1 + x]
    season: float = 1.0  # strength of the vegetation/soil colour shift (0 = none)
    shift: int = 2  # T2 misregistration drawn from [-shift, shift] pixels on each axis
    noise: float = 0.02  # std of Gaussian sensor noise, in [0, 1] units, both dates

    def __post_init__(self) -> None:
        """Check ranges."""
        if self.size < 16:
            raise ConfigError(f"synthetic size must be at least 16 pixels; got {self.size}")
        if min(self.train, self.val, self.test) < 0:
            raise ConfigError("synthetic split sizes must not be negative")
        for name in ("buildings", "roads"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ConfigError(f"synthetic {name} must be a range 0 <= low <= high")
        low_f, high_f = self.building_size
        if not 0 < low_f <= high_f < 0.5:
            raise ConfigError("synthetic building_size must satisfy 0 < low <= high < 0.5")
        if not 0 <= self.change_probability <= 1:
            raise ConfigError("synthetic change_probability must be in [0, 1]")
        if not 0 <= self.illumination < 1 or self.season < 0 or self.noise < 0:
            raise ConfigError("synthetic illumination must be in [0, 1), season and noise >= 0")
        if not 0 <= self.shift < self.size // 4:
            raise ConfigError(f"synthetic shift must be in [0, {self.size // 4})")

    def to_dict(self) -> dict[str, Any]:
        """Plain dictionary of this configuration."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> SyntheticConfig:
        """Rebuild from :meth:`to_dict`'s output (lists become tuples)."""
        plain: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) else v for k, v in values.items()
        }
        return cls(**plain)


@dataclass(frozen=True)
class SceneObject:
    """One drawn object, in the coordinates of the T1 image (rows, columns; end exclusive)."""

    kind: str  # "building" or "road"
    box: tuple[int, int, int, int]  # (top, left, bottom, right), clipped to the image
    in_t1: bool  # present at the first date
    in_t2: bool  # present at the second date

    @property
    def changed(self) -> bool:
        """Whether the object exists at one date only (labelled change)."""
        return self.in_t1 != self.in_t2


@dataclass(frozen=True)
class SyntheticPair:
    """One generated pair with its label and what was drawn."""

    t1: NDArray[np.uint8]  # (H, W, 3) first date
    t2: NDArray[np.uint8]  # (H, W, 3) second date, with the nuisance applied
    label: NDArray[np.uint8]  # (H, W), 1 where an object appeared or vanished, else 0
    objects: tuple[SceneObject, ...]  # everything drawn, T1 coordinates
    shift: tuple[int, int]  # (rows, columns) misregistration of T2 against T1
    gain: float  # global illumination gain of T2


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> NDArray[np.float32]:
    """A smooth random field in [0, 1] of shape (size, size): coarse noise, bilinear-upsampled."""
    coarse = rng.random((cells, cells), dtype=np.float32)
    image = Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.float32)


def _free(occupied: NDArray[np.bool_], box: tuple[int, int, int, int], margin: int) -> bool:
    top, left, bottom, right = box
    return not occupied[
        max(top - margin, 0) : bottom + margin, max(left - margin, 0) : right + margin
    ].any()


def generate_pair(config: SyntheticConfig, seed: int | tuple[int, ...]) -> SyntheticPair:
    """Draw one synthetic pair; the same config and seed always give the same pair.

    The scene is drawn on a canvas ``2 * shift`` pixels larger than the image, once per date
    (objects that exist at that date only are drawn only then). T1 is the centre of the first
    canvas; T2 is a window of the second canvas displaced by the misregistration, then
    photometrically altered. The label marks the pixels whose drawn object differs between the
    dates (in T1's frame): roofs and road surface of objects that appeared or vanished, not
    their shadows.

    Args:
        config: Sizes and strengths.
        seed: Seed of the generator (an int or a tuple such as ``(seed, split, index)``).

    Returns:
        The pair, its (H, W) label and the list of drawn objects.
    """
    rng = np.random.default_rng(seed)
    size, margin = config.size, config.shift
    side = size + 2 * margin

    # Which object covers each canvas pixel at each date (0 ground, 1 road, 2+k building k).
    ids = [np.zeros((side, side), np.int32), np.zeros((side, side), np.int32)]
    objects: list[SceneObject] = []

    def presence() -> tuple[bool, bool]:
        if rng.random() < config.change_probability:
            appears = bool(rng.random() < 0.5)
            return (not appears, appears)
        return (True, True)

    road_mask = np.zeros((side, side), bool)
    for _ in range(int(rng.integers(config.roads[0], config.roads[1] + 1))):
        width = int(rng.integers(3, max(4, size // 12) + 1))
        start = int(rng.integers(0, side - width))
        in_t1, in_t2 = presence()
        if rng.random() < 0.5:
            box = (start, 0, start + width, side)
        else:
            box = (0, start, side, start + width)
        top, left, bottom, right = box
        for date, present in enumerate((in_t1, in_t2)):
            if present:
                ids[date][top:bottom, left:right] = 1
        road_mask[top:bottom, left:right] = True
        objects.append(SceneObject("road", box, in_t1, in_t2))

    occupied = road_mask.copy()
    building_boxes: list[tuple[int, int, int, int]] = []
    roof_colours: list[NDArray[np.float32]] = []
    low, high = (max(3, round(f * size)) for f in config.building_size)
    wanted = int(rng.integers(config.buildings[0], config.buildings[1] + 1))
    for _ in range(wanted * 20):  # rejection sampling: buildings never touch each other or roads
        if len(building_boxes) == wanted:
            break
        height, width = (int(v) for v in rng.integers(low, high + 1, size=2))
        top = int(rng.integers(0, side - height))
        left = int(rng.integers(0, side - width))
        box = (top, left, top + height, left + width)
        if not _free(occupied, box, margin=3):
            continue
        occupied[top : top + height, left : left + width] = True
        in_t1, in_t2 = presence()
        for date, present in enumerate((in_t1, in_t2)):
            if present:
                ids[date][top : top + height, left : left + width] = 2 + len(building_boxes)
        building_boxes.append(box)
        objects.append(SceneObject("building", box, in_t1, in_t2))
        tint = rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
        roof_colours.append(np.clip(_ROOFS[rng.integers(len(_ROOFS))] + tint, 0, 1))

    # Ground: vegetation and soil mixed by a smooth field, with fine texture.
    mix = _smooth_field(rng, side, cells=max(2, size // 16))[..., None]
    texture = (_smooth_field(rng, side, cells=max(4, size // 3)) - 0.5)[..., None] * 0.12
    season = float(rng.uniform(0.3, 1.0)) * config.season
    shadow = np.array(rng.integers(1, 4, size=2))  # sun direction: shadow offset (rows, cols)

    canvases = []
    for date in (0, 1):
        vegetation = _VEGETATION + (season * _SEASON_VEGETATION if date else 0.0)
        soil = _SOIL + (season * _SEASON_SOIL if date else 0.0)
        canvas = mix * vegetation + (1 - mix) * soil + texture
        canvas[ids[date] == 1] = _ROAD
        for k, (top, left, bottom, right) in enumerate(building_boxes):
            if not (ids[date][top:bottom, left:right] == 2 + k).any():
                continue
            # The shadow falls on whatever is beside the building, never on the roof itself.
            s_top, s_left = top + int(shadow[0]), left + int(shadow[1])
            canvas[s_top : bottom + int(shadow[0]), s_left : right + int(shadow[1])] *= 0.55
            canvas[top:bottom, left:right] = roof_colours[k]
            # A ridge line makes the roofs less uniform than flat paint.
            if bottom - top >= right - left:
                mid = (left + right) // 2
                canvas[top:bottom, mid : mid + 1] *= 0.85
            else:
                mid = (top + bottom) // 2
                canvas[mid : mid + 1, left:right] *= 0.85
        canvases.append(canvas)

    dy, dx = (int(v) for v in rng.integers(-margin, margin + 1, size=2))
    t1 = canvases[0][margin : margin + size, margin : margin + size]
    t2 = canvases[1][margin + dy : margin + dy + size, margin + dx : margin + dx + size]
    gain = float(rng.uniform(1 - config.illumination, 1 + config.illumination))
    t2 = t2 * gain + float(rng.uniform(-0.03, 0.03))
    t1 = t1 + rng.normal(0.0, config.noise, t1.shape)
    t2 = t2 + rng.normal(0.0, config.noise, t2.shape)
    label = ids[0] != ids[1]

    def window(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
        top, left, bottom, right = (v - margin for v in box)
        return (max(top, 0), max(left, 0), min(bottom, size), min(right, size))

    return SyntheticPair(
        t1=_to_uint8(t1),
        t2=_to_uint8(t2),
        label=label[margin : margin + size, margin : margin + size].astype(np.uint8),
        objects=tuple(dataclasses.replace(o, box=window(o.box)) for o in objects),
        shift=(dy, dx),
        gain=gain,
    )


def _to_uint8(image: NDArray[np.floating[Any]]) -> NDArray[np.uint8]:
    out: NDArray[np.uint8] = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
    return out


def write_synthetic_dataset(
    root: str | os.PathLike[str],
    config: SyntheticConfig | None = None,
    *,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write a synthetic dataset in the LEVIR-CD layout.

    Files: ``root/{train,val,test}/{A,B,label}/NNNN.png`` (labels 0/255) and ``root/synthetic.json``
    (the configuration and seed). Pair ``i`` of split ``s`` is ``generate_pair(config,
    (seed, s, i))``, so the bytes depend on the seed only. The folder is built beside ``root``
    and renamed into place when complete.

    Args:
        root: Dataset folder to create.
        config: What to draw; defaults to :class:`SyntheticConfig`'s defaults.
        seed: Seed of the whole dataset.
        overwrite: Replace an existing synthetic dataset at ``root`` (a folder without
            ``synthetic.json`` is never replaced).
        progress: Show a progress bar.

    Returns:
        ``root`` as a :class:`Path`.

    Raises:
        OutputExistsError: If ``root`` exists and may not be replaced.
    """
    config = config or SyntheticConfig()
    final = Path(root)
    if final.exists():
        if not overwrite:
            raise OutputExistsError(f"{final} exists; pass --overwrite to replace it")
        if not (final / MARKER).is_file():
            raise OutputExistsError(
                f"{final} exists and is not a synthetic dataset written by dsifn; not replacing it"
            )
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    try:
        counts = {"train": config.train, "val": config.val, "test": config.test}
        total = sum(counts.values())
        with progress_bar(total, "synthetic data", "pair", enabled=progress) as bar:
            for split_index, split in enumerate(SPLITS):
                folders = [tmp / split / name for name in ("A", "B", "label")]
                for folder in folders:
                    folder.mkdir(parents=True)
                for i in range(counts[split]):
                    pair = generate_pair(config, (seed, split_index, i))
                    name = f"{i:04d}.png"
                    Image.fromarray(pair.t1).save(folders[0] / name)
                    Image.fromarray(pair.t2).save(folders[1] / name)
                    Image.fromarray(pair.label * np.uint8(255)).save(folders[2] / name)
                    bar.update()
        info = {"generator": "dsifn.data.synthetic", "seed": seed, "config": config.to_dict()}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final
