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


# OSCD's bands and their pixel size in metres (10 m, 20 m = half the pixels, 60 m = a sixth).
OSCD_RESOLUTION = {
    "B01": 60, "B02": 10, "B03": 10, "B04": 10, "B05": 20, "B06": 20, "B07": 20,
    "B08": 10, "B8A": 20, "B09": 60, "B10": 60, "B11": 20, "B12": 20,
}  # fmt: skip
OSCD_IMAGES = "Onera Satellite Change Detection dataset - Images"
OSCD_LABELS = "Onera Satellite Change Detection dataset - {} Labels"
_DEGREES = 1e-4  # about 10 m of latitude, in EPSG:4326 like the real files


def oscd_band_value(band: str, date: int) -> int:
    """The uint16 value a fake OSCD band file holds outside change: it names band and date."""
    return 100 * (list(OSCD_RESOLUTION).index(band) + 1) + date


def write_oscd_city(
    folder: Path,
    name: str,
    change: np.ndarray,
    *,
    coding: str = "tif",
    label_folder: Path | None = None,
    unlabelled: np.ndarray | None = None,
) -> None:
    """One OSCD-like city: ``imgs_1``/``imgs_2`` with 13 band files, and its change map.

    Every band file is constant (:func:`oscd_band_value`) except T2's B04, which is 9000 where
    ``change`` is True. ``coding`` ``"tif"`` writes ``{name}-cm.tif`` coded 1/2 (0 where
    ``unlabelled``), ``"png"`` writes ``cm.png`` coded 0/255. ``change`` is (H, W) with H and
    W multiples of 6.
    """
    height, width = change.shape
    for date in (1, 2):
        for band, metres in OSCD_RESOLUTION.items():
            step = metres // 10
            value = oscd_band_value(band, date)
            data = np.full((height // step, width // step), value, dtype=np.uint16)
            if date == 2 and band == "B04":
                data[change] = 9000
            path = folder / name / f"imgs_{date}" / f"S2A_OPER_MSI_L1C_TL_SGS__T31UDQ_{band}.tif"
            _write_geographic(path, data, _DEGREES * step)
    cm = (label_folder or folder) / name / "cm"
    if coding == "tif":
        labels = np.where(change, 2, 1).astype(np.uint8)
        if unlabelled is not None:
            labels[unlabelled] = 0
        _write_geographic(cm / f"{name}-cm.tif", labels, _DEGREES)
    else:
        write_image(cm / "cm.png", change.astype(np.uint8) * 255)


def _write_geographic(path: Path, data: np.ndarray, pixel: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {
        "driver": "GTiff",
        "width": data.shape[1],
        "height": data.shape[0],
        "count": 1,
        "dtype": data.dtype.name,
        "crs": "EPSG:4326",
        "transform": Affine(pixel, 0.0, 2.3, 0.0, -pixel, 48.8),  # near Paris
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data[None])


def oscd_change(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """(H, W) bool: a rectangle of change somewhere in the city."""
    change = np.zeros((height, width), dtype=bool)
    top, left = rng.integers(0, height - 12), rng.integers(0, width - 12)
    change[top : top + 10, left : left + 10] = True
    return change


def write_oscd(root: Path, *, official: bool = True, seed: int = 0) -> Path:
    """A tiny OSCD: 5 train cities and 2 test cities of 42 to 66 pixels a side.

    ``official`` writes the distribution's folders (images with ``train.txt`` and
    ``test.txt``, labels apart, change maps as 1/2 ``.tif``); otherwise a plain folder of
    cities with ``cm/`` inside each, the first three ``.tif`` and the rest ``cm.png``.
    """
    rng = np.random.default_rng(seed)
    train = ["abudhabi", "beihai", "cupertino", "hongkong", "mumbai"]
    test = ["brasilia", "chongqing"]
    sizes = [(42, 60), (48, 48), (66, 54), (54, 42), (60, 66), (48, 54), (42, 42)]
    images = root / OSCD_IMAGES if official else root
    for i, (city, (height, width)) in enumerate(zip(train + test, sizes, strict=True)):
        split = "Train" if city in train else "Test"
        write_oscd_city(
            images,
            city,
            oscd_change(rng, height, width),
            coding="tif" if official or i < 3 else "png",
            label_folder=root / OSCD_LABELS.format(split) if official else None,
        )
    if official:
        (images / "train.txt").write_text(",".join(train) + "\n")
        (images / "test.txt").write_text(",".join(test) + "\n")
    return root
