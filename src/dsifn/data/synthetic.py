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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from dsifn._config import Config, settle
from dsifn.errors import ConfigError, OutputExistsError
from dsifn.io.atomic import move_into_place, work_folder
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

# File written at the dataset root; only a folder holding it may be replaced (`overwrite`).
MARKER = "synthetic.json"
SPLITS = ("train", "val", "test")
_FOLDERS = ("A", "B", "label")  # T1, T2 and the label of each split, as LEVIR-CD names them

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
class SyntheticConfig(Config):
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

    section: ClassVar[str] = "synthetic"

    def __post_init__(self) -> None:
        """Check ranges."""
        settle(self)
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
    # The steps draw from one generator in a fixed order: changing the order changes the data.
    rng = np.random.default_rng(seed)
    size, margin = config.size, config.shift
    scene = _Scene.empty(size + 2 * margin)
    occupied = _draw_roads(rng, config, scene)
    _draw_buildings(rng, config, scene, occupied)
    canvases = _paint(rng, config, scene)
    t1, t2, shift, gain = _observe(rng, config, canvases)
    inner = slice(margin, margin + size)
    label = (scene.ids[0] != scene.ids[1])[inner, inner]
    return SyntheticPair(
        t1=_to_uint8(t1),
        t2=_to_uint8(t2),
        label=label.astype(np.uint8),
        objects=tuple(_in_image(o, margin, size) for o in scene.objects),
        shift=shift,
        gain=gain,
    )


@dataclass
class _Scene:
    """What a pair shows, on the canvas (the image plus the misregistration margin)."""

    ids: tuple[NDArray[np.int32], NDArray[np.int32]]  # per date: 0 ground, 1 road, 2+k building k
    objects: list[SceneObject]  # everything drawn, canvas coordinates
    buildings: list[tuple[int, int, int, int]]  # box of building k
    roofs: list[NDArray[np.float32]]  # (3,) roof colour of building k

    @classmethod
    def empty(cls, side: int) -> _Scene:
        """Bare ground on a (side, side) canvas."""
        ids = (np.zeros((side, side), np.int32), np.zeros((side, side), np.int32))
        return cls(ids, [], [], [])

    @property
    def side(self) -> int:
        """Side of the canvas in pixels."""
        return int(self.ids[0].shape[0])

    def add(self, kind: str, box: tuple[int, int, int, int], dates: tuple[bool, bool]) -> None:
        """Cover ``box`` at the dates the object exists with its id (1 road, 2+k building)."""
        value = 1 if kind == "road" else 2 + len(self.buildings)
        top, left, bottom, right = box
        for date, present in enumerate(dates):
            if present:
                self.ids[date][top:bottom, left:right] = value
        self.objects.append(SceneObject(kind, box, *dates))


def _presence(rng: np.random.Generator, config: SyntheticConfig) -> tuple[bool, bool]:
    """Whether an object exists at (T1, T2): at one date only with ``change_probability``."""
    if rng.random() < config.change_probability:
        appears = bool(rng.random() < 0.5)
        return (not appears, appears)
    return (True, True)


def _draw_roads(
    rng: np.random.Generator, config: SyntheticConfig, scene: _Scene
) -> NDArray[np.bool_]:
    """Straight roads across the whole canvas; returns the pixels they cover at either date."""
    side = scene.side
    road_mask = np.zeros((side, side), bool)
    for _ in range(int(rng.integers(config.roads[0], config.roads[1] + 1))):
        width = int(rng.integers(3, max(4, config.size // 12) + 1))
        start = int(rng.integers(0, side - width))
        dates = _presence(rng, config)
        if rng.random() < 0.5:
            box = (start, 0, start + width, side)
        else:
            box = (0, start, side, start + width)
        scene.add("road", box, dates)
        road_mask[box[0] : box[2], box[1] : box[3]] = True
    return road_mask


def _draw_buildings(
    rng: np.random.Generator,
    config: SyntheticConfig,
    scene: _Scene,
    occupied: NDArray[np.bool_],
) -> None:
    """Rectangular buildings that touch neither each other nor a road, with roof colours."""
    side = scene.side
    low, high = (max(3, round(f * config.size)) for f in config.building_size)
    wanted = int(rng.integers(config.buildings[0], config.buildings[1] + 1))
    for _ in range(wanted * 20):  # rejection sampling
        if len(scene.buildings) == wanted:
            break
        height, width = (int(v) for v in rng.integers(low, high + 1, size=2))
        top = int(rng.integers(0, side - height))
        left = int(rng.integers(0, side - width))
        box = (top, left, top + height, left + width)
        if not _free(occupied, box, margin=3):
            continue
        occupied[top : top + height, left : left + width] = True
        scene.add("building", box, _presence(rng, config))
        scene.buildings.append(box)
        tint = rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
        scene.roofs.append(np.clip(_ROOFS[rng.integers(len(_ROOFS))] + tint, 0, 1))


def _paint(
    rng: np.random.Generator, config: SyntheticConfig, scene: _Scene
) -> list[NDArray[np.floating[Any]]]:
    """The two dates' (side, side, 3) canvases: textured ground, season shift, roads, roofs."""
    side, size = scene.side, config.size
    # Ground: vegetation and soil mixed by a smooth field, with fine texture.
    mix = _smooth_field(rng, side, cells=max(2, size // 16))[..., None]
    texture = (_smooth_field(rng, side, cells=max(4, size // 3)) - 0.5)[..., None] * 0.12
    season = float(rng.uniform(0.3, 1.0)) * config.season
    rows, cols = (int(v) for v in rng.integers(1, 4, size=2))  # sun direction: shadow offset
    canvases = []
    for date in (0, 1):
        vegetation = _VEGETATION + (season * _SEASON_VEGETATION if date else 0.0)
        soil = _SOIL + (season * _SEASON_SOIL if date else 0.0)
        canvas = mix * vegetation + (1 - mix) * soil + texture
        canvas[scene.ids[date] == 1] = _ROAD
        for k, (top, left, bottom, right) in enumerate(scene.buildings):
            if (scene.ids[date][top:bottom, left:right] == 2 + k).any():
                _paint_building(canvas, (top, left, bottom, right), scene.roofs[k], (rows, cols))
        canvases.append(canvas)
    return canvases


def _paint_building(
    canvas: NDArray[np.floating[Any]],
    box: tuple[int, int, int, int],
    roof: NDArray[np.float32],
    shadow: tuple[int, int],
) -> None:
    """A roof with a ridge line, and its shadow cast by ``shadow`` (rows, columns)."""
    top, left, bottom, right = box
    # The shadow falls on whatever is beside the building, never on the roof itself.
    canvas[top + shadow[0] : bottom + shadow[0], left + shadow[1] : right + shadow[1]] *= 0.55
    canvas[top:bottom, left:right] = roof
    # A ridge line makes the roofs less uniform than flat paint.
    if bottom - top >= right - left:
        mid = (left + right) // 2
        canvas[top:bottom, mid : mid + 1] *= 0.85
    else:
        mid = (top + bottom) // 2
        canvas[mid : mid + 1, left:right] *= 0.85


def _observe(
    rng: np.random.Generator, config: SyntheticConfig, canvases: list[NDArray[np.floating[Any]]]
) -> tuple[NDArray[np.floating[Any]], NDArray[np.floating[Any]], tuple[int, int], float]:
    """Cut T1 and a misregistered T2 from the canvases; T2's illumination; sensor noise.

    Returns:
        T1, T2 (float images, not yet clipped), the (rows, columns) shift and T2's gain.
    """
    size, margin = config.size, config.shift
    dy, dx = (int(v) for v in rng.integers(-margin, margin + 1, size=2))
    t1 = canvases[0][margin : margin + size, margin : margin + size]
    t2 = canvases[1][margin + dy : margin + dy + size, margin + dx : margin + dx + size]
    gain = float(rng.uniform(1 - config.illumination, 1 + config.illumination))
    t2 = t2 * gain + float(rng.uniform(-0.03, 0.03))
    t1 = t1 + rng.normal(0.0, config.noise, t1.shape)
    t2 = t2 + rng.normal(0.0, config.noise, t2.shape)
    return t1, t2, (dy, dx), gain


def _in_image(drawn: SceneObject, margin: int, size: int) -> SceneObject:
    """``drawn`` with its box moved from canvas to T1 coordinates and clipped to the image."""
    top, left, bottom, right = (v - margin for v in drawn.box)
    box = (max(top, 0), max(left, 0), min(bottom, size), min(right, size))
    return dataclasses.replace(drawn, box=box)


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
    (seed, s, i))``, so the bytes depend on the seed only. The folder is built in a private
    folder beside ``root``, synced, and renamed into place when complete (an old dataset is
    replaced only then), so an interrupted run leaves the old one or none, never a part.

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
    _check_replaceable(final, overwrite)
    with work_folder(final.parent) as work:
        tmp = Path(work) / final.name
        counts = {"train": config.train, "val": config.val, "test": config.test}
        with progress_bar(sum(counts.values()), "synthetic data", "pair", enabled=progress) as bar:
            for split_index, split in enumerate(SPLITS):
                for folder in _FOLDERS:  # made for an empty split too
                    (tmp / split / folder).mkdir(parents=True)
                for i in range(counts[split]):
                    _write_pair(tmp / split, i, generate_pair(config, (seed, split_index, i)))
                    bar.update()
        info = {"generator": "dsifn.data.synthetic", "seed": seed, "config": config.to_dict()}
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n")
        final.parent.mkdir(parents=True, exist_ok=True)
        move_into_place(tmp, final)  # every file synced, then renamed over any old dataset
    return final


def _check_replaceable(final: Path, overwrite: bool) -> None:
    """Refuse an existing ``final`` unless overwriting a dataset this module wrote."""
    if final.exists():
        if not overwrite:
            raise OutputExistsError(f"{final} exists; pass `overwrite=True` to replace it")
        if not (final / MARKER).is_file():
            raise OutputExistsError(
                f"{final} exists and is not a synthetic dataset written by dsifn; not replacing it"
            )


def _write_pair(split: Path, index: int, pair: SyntheticPair) -> None:
    """Pair ``index`` as ``split/{A,B,label}/NNNN.png``, the label as 0/255."""
    name = f"{index:04d}.png"
    images = (pair.t1, pair.t2, pair.label * np.uint8(255))
    for folder, image in zip(_FOLDERS, images, strict=True):
        Image.fromarray(image).save(split / folder / name)
