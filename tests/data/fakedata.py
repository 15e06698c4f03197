"""Tiny change-detection datasets written to a temporary folder, from a fixed seed.

T2 carries the change in its first band: wherever the mask says change, T2's band 1 is 255
(bright), elsewhere it is at most 127. So a test can recover the mask from T2 alone, which is
what the augmentation-alignment tests rely on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

# Layout name -> (t1, t2, mask) folder names, as the datasets are distributed.
FOLDERS = {
    "dsifn": ("t1", "t2", "mask"),
    "levir": ("A", "B", "label"),
    "cdd": ("A", "B", "OUT"),
    "sysu": ("time1", "time2", "label"),
    "s2looking": ("Image1", "Image2", "label"),
}


def write_image(path: Path, array: np.ndarray, *, nodata: float | None = None) -> Path:
    """Write (H, W) or (C, H, W) pixels; TIFF through rasterio (with a CRS), else Pillow."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".tif", ".tiff"):
        data = array if array.ndim == 3 else array[None]
        profile = {
            "driver": "GTiff",
            "width": data.shape[2],
            "height": data.shape[1],
            "count": data.shape[0],
            "dtype": data.dtype.name,
            "crs": "EPSG:32631",
            "transform": Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 5000000.0),  # 0.5 m, UTM 31N
        }
        if nodata is not None:
            profile["nodata"] = nodata
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
    else:
        pixels = array if array.ndim == 2 else np.moveaxis(array, 0, -1)
        Image.fromarray(pixels).save(path)
    return path


def make_pair(rng: np.random.Generator, size: int = 32, bands: int = 3):
    """(t1, t2, change) with t1, t2 (bands, H, W) uint8 and change (H, W) bool."""
    t1 = rng.integers(0, 128, (bands, size, size), dtype=np.uint8)
    t2 = rng.integers(0, 128, (bands, size, size), dtype=np.uint8)
    change = np.zeros((size, size), dtype=bool)
    for _ in range(2):  # two rectangles of change
        top, left = rng.integers(0, size - 8, 2)
        height, width = rng.integers(3, 9, 2)
        change[top : top + height, left : left + width] = True
    t2[0][change] = 255
    return t1, t2, change


def encode_mask(change: np.ndarray, coding: str) -> np.ndarray | Image.Image:
    """Mask pixels as a dataset would store them: '0/1', '0/255', 'rgb' or 'palette'."""
    if coding == "0/1":
        return change.astype(np.uint8)
    if coding == "0/255":
        return change.astype(np.uint8) * 255
    if coding == "rgb":  # change drawn in red; no change black
        rgb = np.zeros((3, *change.shape), dtype=np.uint8)
        rgb[0][change] = 200
        return rgb
    if coding == "palette":
        image = Image.fromarray(change.astype(np.uint8), mode="P")
        image.putpalette([0, 0, 0, 255, 255, 0] + [0] * 762)
        return image
    raise ValueError(coding)


def write_split(
    folders: tuple[Path, Path, Path],
    count: int,
    *,
    seed: int = 0,
    size: int = 32,
    bands: int = 3,
    image_suffix: str = ".png",
    mask_suffix: str = ".png",
    coding: str = "0/255",
    prefix: str = "tile",
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Write ``count`` pairs; return name -> (t1, t2, change) as written."""
    rng = np.random.default_rng(seed)
    written = {}
    for i in range(count):
        name = f"{prefix}_{i}"
        t1, t2, change = make_pair(rng, size, bands)
        write_image(folders[0] / f"{name}{image_suffix}", t1 if bands > 1 else t1[0])
        write_image(folders[1] / f"{name}{image_suffix}", t2 if bands > 1 else t2[0])
        mask = encode_mask(change, coding)
        mask_path = folders[2] / f"{name}{mask_suffix}"
        if isinstance(mask, Image.Image):
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            mask.save(mask_path)
        else:
            write_image(mask_path, mask)
        written[name] = (t1, t2, change)
    return written


def build_layout(
    root: Path,
    layout: str,
    splits: dict[str, int] | None = None,
    **options,
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Write a dataset in ``layout``'s folders; return split -> name -> arrays.

    ``layout`` is a key of FOLDERS, "cdd-subset" (CDD with its subset/ level) or "list".
    """
    splits = splits or {"train": 3, "val": 2, "test": 2}
    written = {}
    for seed, (split, count) in enumerate(splits.items()):
        if layout == "list":
            folders = tuple(root / name for name in FOLDERS["levir"])
            pairs = write_split(folders, count, seed=seed, prefix=split, **options)
            (root / "list").mkdir(parents=True, exist_ok=True)
            lines = "".join(f"{name}.png\n" for name in pairs)
            (root / "list" / f"{split}.txt").write_text(lines)
        else:
            base = root / "subset" if layout == "cdd-subset" else root
            names = FOLDERS["cdd" if layout == "cdd-subset" else layout]
            folders = tuple(base / split / name for name in names)
            pairs = write_split(folders, count, seed=seed, **options)
        written[split] = pairs
    return written
