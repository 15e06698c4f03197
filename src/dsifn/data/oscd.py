"""OSCD as distributed: cities of 13 band files per date, change maps in label folders.

OSCD (Onera Satellite Change Detection, Daudt et al., IGARSS 2018) is read as distributed
(``Onera Satellite Change Detection dataset - Images/{city}/imgs_1|imgs_2/*_B01.tif ...``, with
``train.txt`` and ``test.txt`` naming cities comma-separated, and the change maps under
``... - Train Labels/{city}/cm/`` and ``... - Test Labels/{city}/cm/``) or as a plain folder of
cities (``{city}/imgs_1``, ``{city}/imgs_2``, ``{city}/cm/``; all of them train without list
files). A sample's T1 and T2 are its 13 band files in the documented order (:data:`OSCD_BANDS`);
the change map is ``{city}-cm.tif`` (1 = no change, 2 = change) or else ``cm.png`` (0/255).
OSCD has no val split: :meth:`~dsifn.data.layouts.DetectedLayout.with_validation` carves one
from the train cities, by default :data:`OSCD_VAL_FRACTION` of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from dsifn.data.pairs import (
    SPLIT_ORDER,
    Sample,
    SplitFiles,
    canonical_split,
    child_folder,
    ordered_splits,
)
from dsifn.data.readers import LabelCoding

__all__ = ["OSCD_BANDS", "OSCD_FOLDERS", "OSCD_VAL_FRACTION", "find_oscd_layout"]

OSCD_BANDS = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
# The share of OSCD's train cities that form its val split unless the config says otherwise.
OSCD_VAL_FRACTION = 0.2
_OSCD_IMAGES = "Onera Satellite Change Detection dataset - Images"
_OSCD_LABELS = (
    "Onera Satellite Change Detection dataset - Train Labels",
    "Onera Satellite Change Detection dataset - Test Labels",
)
OSCD_FOLDERS = ("imgs_1", "imgs_2", "cm")  # a city's (t1, t2, change map) folders


def _oscd_cities(images: Path) -> dict[str, Path]:
    cities = {}
    for entry in sorted(images.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            if (
                child_folder(entry, "imgs_1") is not None
                and child_folder(entry, "imgs_2") is not None
            ):
                cities[entry.name] = entry
    return cities


def _oscd_bands(folder: Path) -> tuple[tuple[Path, ...], list[str]]:
    """The 13 band files of one date in :data:`OSCD_BANDS` order, and what is missing."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir()):
        if entry.suffix.lower() in (".tif", ".tiff") and entry.is_file():
            found.setdefault(entry.stem.rsplit("_", 1)[-1].upper(), []).append(entry)
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


def find_oscd_layout(root: Path) -> dict[str, SplitFiles]:
    """The splits of an OSCD folder, as distributed or as a plain folder of cities; {} if none.

    The cities of a split are the ones its list file (``train.txt``, ``test.txt``) names; without
    list files every city is a train city.
    """
    images = child_folder(root, _OSCD_IMAGES) or root
    cities = _oscd_cities(images)
    if not cities:
        return {}
    label_roots = [folder for name in _OSCD_LABELS if (folder := child_folder(root, name))]
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


def _city_sample(
    city: str, folder: Path | None, images: Path, label_roots: Sequence[Path]
) -> Sample | str:
    """The sample of one city, or what is missing."""
    if folder is None:
        return f"{city}: no folder with imgs_1 and imgs_2 in {images}"
    imgs_1, imgs_2 = child_folder(folder, "imgs_1"), child_folder(folder, "imgs_2")
    assert imgs_1 is not None and imgs_2 is not None
    t1, missing_1 = _oscd_bands(imgs_1)
    t2, missing_2 = _oscd_bands(imgs_2)
    places = [folder, *(r / city for r in label_roots if (r / city).is_dir())]
    label = _oscd_label(places, city)
    missing = missing_1 + missing_2
    if label is None:
        missing.append(f"no change map ({city}-cm.tif or cm.png in cm/)")
    if missing or label is None:
        return f"{city}: {'; '.join(missing)}"
    return Sample(city, t1, t2, label[0], label[1])
