"""OSCD as distributed: cities of 13 band files per date, change maps in label folders.

OSCD (Onera Satellite Change Detection, Daudt et al., IGARSS 2018) is read as downloaded: its
three folders ``Onera Satellite Change Detection dataset - Images`` (``{city}/imgs_1``,
``imgs_2`` with ``*_B01.tif ...`` at 10, 20 and 60 m, ``imgs_1_rect``, ``imgs_2_rect`` with
every band resampled onto the 10 m grid by the dataset's authors, ``train.txt`` and
``test.txt`` naming cities comma-separated), ``... - Train Labels/{city}/cm/`` and ``... - Test
Labels/{city}/cm/``. The dataset folder is their parent, and any of the three folders finds
the other two beside it. A plain folder of cities (``{city}/imgs_1``, ``{city}/imgs_2``,
``{city}/cm/``; all of them train without list files) is read too.

A sample's T1 and T2 are its 13 band files in the documented order (:data:`OSCD_BANDS`), from
``imgs_*_rect`` where they exist (what torchgeo and the authors read) unless ``rect`` is
false, else from ``imgs_*``; the change map is ``{city}-cm.tif`` (1 = no change, 2 = change)
or else ``cm.png`` (0/255). The change map is on T1's grid; where a city's T2 lies on another
grid over the same ground (in the download some cities' dates differ by a pixel or two a
side), T2 is resampled onto T1's (``Sample.align``). The images are Sentinel-2 L1C of
2015-2018, before processing baseline 04.00: reflectance = DN / 10000 (:data:`OSCD_VALUES`).
OSCD has no val split: :meth:`~dsifn.data.layouts.DetectedLayout.with_validation` carves one
from the train cities, by default :data:`OSCD_VAL_FRACTION` of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from dsifn.bands import SENTINEL2_BANDS, band_in_name
from dsifn.data.pairs import (
    SPLIT_ORDER,
    Sample,
    SplitFiles,
    canonical_split,
    child_folder,
    ordered_splits,
)
from dsifn.data.readers import LabelCoding
from dsifn.io.radiometry import S2_QUANTIFICATION, Conversion

__all__ = [
    "OSCD_BANDS",
    "OSCD_FOLDERS",
    "OSCD_RECT_FOLDERS",
    "OSCD_VALUES",
    "OSCD_VAL_FRACTION",
    "find_oscd_layout",
    "oscd_folders",
]

OSCD_BANDS = SENTINEL2_BANDS
# The share of OSCD's train cities that form its val split unless the config says otherwise.
OSCD_VAL_FRACTION = 0.2
_OSCD_IMAGES = "Onera Satellite Change Detection dataset - Images"
_OSCD_LABELS = (
    "Onera Satellite Change Detection dataset - Train Labels",
    "Onera Satellite Change Detection dataset - Test Labels",
)
OSCD_FOLDERS = ("imgs_1", "imgs_2", "cm")  # a city's (t1, t2, change map) folders
OSCD_RECT_FOLDERS = ("imgs_1_rect", "imgs_2_rect", "cm")  # the same, every band at 10 m
# OSCD's digital numbers: Sentinel-2 L1C of 2015-2018, before processing baseline 04.00.
OSCD_VALUES = Conversion(
    1 / S2_QUANTIFICATION, 0.0, "OSCD, L1C before processing baseline 04.00: DN / 10000"
)


def _dates(city: Path, rect: bool) -> tuple[Path, Path] | None:
    """A city's (T1, T2) folders: ``imgs_*_rect`` where asked and present, else ``imgs_*``."""
    for names in (OSCD_RECT_FOLDERS, OSCD_FOLDERS) if rect else (OSCD_FOLDERS,):
        t1, t2 = child_folder(city, names[0]), child_folder(city, names[1])
        if t1 is not None and t2 is not None:
            return t1, t2
    return None


def _oscd_cities(images: Path, rect: bool) -> dict[str, tuple[Path, Path]]:
    cities = {}
    for entry in sorted(images.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            dates = _dates(entry, rect)
            if dates is not None:
                cities[entry.name] = dates
    return cities


def _oscd_bands(folder: Path) -> tuple[tuple[Path, ...], list[str]]:
    """The 13 band files of one date in :data:`OSCD_BANDS` order, and what is missing."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        band = band_in_name(entry.name)
        if entry.suffix.lower() in (".tif", ".tiff") and entry.is_file() and band is not None:
            found.setdefault(band, []).append(entry)
    missing = [band for band in OSCD_BANDS if band not in found]
    doubled = [band for band in OSCD_BANDS if len(found.get(band, ())) > 1]
    problems = [f"no {', '.join(missing)} in {folder}"] if missing else []
    problems += [f"several files of {', '.join(doubled)} in {folder}"] if doubled else []
    return tuple(found[band][0] for band in OSCD_BANDS if band in found), problems


def _oscd_label(folders: Sequence[Path], city: str) -> tuple[Path, LabelCoding] | None:
    """The change map of ``city``: ``{city}-cm.tif`` (1/2) before ``cm.png`` (0/255)."""
    for folder in folders:
        cm = child_folder(folder, "cm")
        if cm is None:
            continue
        for entry in sorted(cm.iterdir()):
            if entry.name.lower() in (f"{city.lower()}-cm.tif", f"{city.lower()}-cm.tiff"):
                return entry, "oscd"
    for folder in folders:
        cm = child_folder(folder, "cm")
        if cm is not None and (cm / "cm.png").is_file():
            return cm / "cm.png", "change>0"
    return None


def _read_city_list(path: Path) -> list[str]:
    # train.txt is one line of comma-separated cities; newlines are accepted too.
    return [c.strip() for c in re.split(r"[,\n]", path.read_text()) if c.strip()]


def _dataset_folder(root: Path) -> Path:
    """The folder holding the download's three folders: ``root``, or its parent when it is one."""
    names = {name.lower() for name in (_OSCD_IMAGES, *_OSCD_LABELS)}
    return root.parent if root.name.lower() in names else root


def find_oscd_layout(root: Path, *, rect: bool = True) -> dict[str, SplitFiles]:
    """The splits of an OSCD folder, as distributed or as a plain folder of cities; {} if none.

    Args:
        root: The dataset folder, or any of the download's three folders.
        rect: Read ``imgs_*_rect`` where a city has them.

    The cities of a split are the ones its list file (``train.txt``, ``test.txt``) names; without
    list files every city is a train city.
    """
    base = _dataset_folder(root)
    images = child_folder(base, _OSCD_IMAGES) or root
    cities = _oscd_cities(images, rect)
    if not cities:
        return {}
    label_roots = [folder for name in _OSCD_LABELS if (folder := child_folder(base, name))]
    lists = {
        canonical_split(entry.stem): entry
        for entry in sorted(images.glob("*.txt"))
        if canonical_split(entry.stem) in SPLIT_ORDER
    }
    wanted = {split: _read_city_list(path) for split, path in lists.items()}
    if not wanted:
        wanted = {"train": list(cities)}
    splits: dict[str, SplitFiles] = {}
    for split, names in wanted.items():
        samples, problems = [], []
        for city in dict.fromkeys(names):
            found = _city_sample(city, cities.get(city), images, label_roots)
            if isinstance(found, Sample):
                samples.append(found)
            else:
                problems.append(found)
        folders = (images, images, label_roots[0] if label_roots else images)
        splits[split] = SplitFiles(folders, tuple(samples), tuple(problems), lists.get(split))
    return ordered_splits(splits)


def oscd_folders(splits: dict[str, SplitFiles]) -> tuple[str, str, str]:
    """The (t1, t2, change map) folder names the samples were read from, for messages."""
    for files in splits.values():
        for sample in files.samples:
            if isinstance(sample.t1, tuple) and sample.t1[0].parent.name.lower().endswith("_rect"):
                return OSCD_RECT_FOLDERS
    return OSCD_FOLDERS


def _city_sample(
    city: str, dates: tuple[Path, Path] | None, images: Path, label_roots: Sequence[Path]
) -> Sample | str:
    """The sample of one city, or what is missing."""
    if dates is None:
        return f"{city}: no folder with imgs_1 and imgs_2 in {images}"
    t1, missing_1 = _oscd_bands(dates[0])
    t2, missing_2 = _oscd_bands(dates[1])
    folder = dates[0].parent
    places = [folder, *(r / city for r in label_roots if (r / city).is_dir())]
    label = _oscd_label(places, city)
    missing = missing_1 + missing_2
    if label is None:
        missing.append(f"no change map ({city}-cm.tif or cm.png in cm/)")
    if missing or label is None:
        return f"{city}: {'; '.join(missing)}"
    return Sample(city, t1, t2, label[0], label[1], align=True, known=OSCD_VALUES)
