"""Finding the image pairs and masks of a dataset in the folder layouts it is distributed in.

Layouts, as the datasets are distributed:

======================  ==============================================================
``dsifn``               DSIFN-CD: ``{split}/{t1,t2,mask}``
``levir`` (``whu``)     LEVIR-CD and WHU-CD: ``{split}/{A,B,label}``
``cdd``                 CDD: ``subset/{split}/{A,B,OUT}`` (or without ``subset/``)
``sysu``                SYSU-CD: ``{split}/{time1,time2,label}``
``s2looking``           S2Looking: ``{split}/{Image1,Image2,label}``
``list``                BIT / ChangeFormer style: ``A/``, ``B/``, ``label/``, ``list/{split}.txt``
``oscd``                OSCD: ``{city}/{imgs_1,imgs_2,cm}``, one GeoTIFF per band (see below)
``generic``             the user's three folder names, under split folders or directly under root
======================  ==============================================================

Every folder layout also accepts its three folders directly under the root, read as one split
called ``"all"``. Folder names match case-insensitively. Files pair up by name without
extension (a mask may be ``.tif`` where the images are ``.png``). Split folders named
``training``, ``valid``, ``validation`` or ``testing`` are called ``train``, ``val`` and ``test``.

OSCD (Onera Satellite Change Detection, Daudt et al., IGARSS 2018) is read as distributed
(``Onera Satellite Change Detection dataset - Images/{city}/imgs_1|imgs_2/*_B01.tif ...``, with
``train.txt`` and ``test.txt`` naming cities comma-separated, and the change maps under
``... - Train Labels/{city}/cm/`` and ``... - Test Labels/{city}/cm/``) or as a plain folder of
cities (``{city}/imgs_1``, ``{city}/imgs_2``, ``{city}/cm/``; all of them train without list
files). A sample's T1 and T2 are its 13 band files in the documented order (:data:`OSCD_BANDS`);
the change map is ``{city}-cm.tif`` (1 = no change, 2 = change) or else ``cm.png`` (0/255).
OSCD has no val split: :meth:`DetectedLayout.with_validation` carves one from the train cities,
by default :data:`OSCD_VAL_FRACTION` of them.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

from dsifn._validation import check_choice
from dsifn.data.config import Layout
from dsifn.data.readers import LabelCoding
from dsifn.errors import ConfigError, DataError
from dsifn.io.images import IMAGE_SUFFIXES

__all__ = [
    "OSCD_BANDS",
    "OSCD_VAL_FRACTION",
    "DetectedLayout",
    "Sample",
    "SplitFiles",
    "canonical_split",
    "detect_layout",
    "pair_names",
]

# Layout name -> (what describe() calls it, the (t1, t2, mask) folder names).
_FOLDER_LAYOUTS: dict[str, tuple[str, tuple[str, str, str]]] = {
    "dsifn": ("DSIFN-CD", ("t1", "t2", "mask")),
    "levir": ("LEVIR-CD / WHU-CD style", ("A", "B", "label")),
    "whu": ("LEVIR-CD / WHU-CD style", ("A", "B", "label")),
    "cdd": ("CDD", ("A", "B", "OUT")),
    "sysu": ("SYSU-CD", ("time1", "time2", "label")),
    "s2looking": ("S2Looking", ("Image1", "Image2", "label")),
}
# Tried in this order by "auto"; "list" first since its folders are LEVIR's plus list/.
_AUTO_ORDER = ("list", "dsifn", "levir", "cdd", "sysu", "s2looking", "oscd")
_SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}
_SPLIT_ORDER = ("train", "val", "test")
# The split name of three folders found directly under the root.
SINGLE_SPLIT = "all"

# OSCD's 13 Sentinel-2 bands in the documented order: a sample's band files come in this order.
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
_OSCD_FOLDERS = ("imgs_1", "imgs_2", "cm")


@dataclass(frozen=True)
class Sample:
    """The files of one labelled pair."""

    name: str  # file name without extension (OSCD: the city), unique within its split
    t1: Path | tuple[Path, ...]  # image of the first date, or its band files in order
    t2: Path | tuple[Path, ...]  # image of the second date, or its band files in order
    mask: Path  # change mask
    coding: LabelCoding = "change>0"  # how the mask codes its labels

    def where(self, date: str) -> str:
        """Where date ``"T1"`` or ``"T2"`` is on disk, for messages (a band file's folder)."""
        files = self.t1 if date == "T1" else self.t2
        return str(files[0].parent if isinstance(files, tuple) else files)


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split, and what is wrong with its listing."""

    folders: tuple[Path, Path, Path]  # (t1, t2, mask) folders
    samples: tuple[Sample, ...]  # complete pairs, in name (or list-file) order
    problems: tuple[str, ...] = ()  # files without partners, ambiguous names
    list_file: Path | None = None  # the list layout's file naming the pairs
    carved: bool = False  # a val split taken from the train pairs, not found on disk


@dataclass(frozen=True)
class DetectedLayout:
    """A dataset's layout and the splits found on disk."""

    name: str  # layout name, e.g. "levir"
    splits: dict[str, SplitFiles]  # split name ("train", "val", "test", "all", ...) -> files
    root: Path = Path()  # the dataset folder
    folders: tuple[str, str, str] = ("A", "B", "label")  # the (t1, t2, mask) folder names

    def describe(self) -> str:
        """One line saying what was found, for ``dsifn train`` and ``dsifn stats`` to print.

        Example: ``found LEVIR-CD / WHU-CD style layout (A/B/label) with splits train (445
        pairs), val (64), test (128)``.
        """
        parts = []
        for i, (split, files) in enumerate(self.splits.items()):
            count = f"{len(files.samples)} pairs" if i == 0 else f"{len(files.samples)}"
            if files.problems:
                count += f", {len(files.problems)} incomplete"
            parts.append(f"{split} ({count})")
        split_word = "split" if len(parts) == 1 else "splits"
        return (
            f"found {self.title} layout ({self.shape}) in {self.root} with {split_word} "
            f"{', '.join(parts)}"
        )

    @property
    def title(self) -> str:
        """Human name of the layout ("LEVIR-CD / WHU-CD style", "generic", ...)."""
        if self.name == "list":
            return "list-file"
        if self.name == "generic":
            return "generic"
        if self.name == "oscd":
            return "OSCD"
        return _FOLDER_LAYOUTS[self.name][0]

    @property
    def shape(self) -> str:
        """The folder names, e.g. ``A/B/label``."""
        text = "/".join(self.folders)
        if self.name == "oscd":
            return f"cities with {text}"
        return f"{text} with list/*.txt" if self.name == "list" else text

    def split(self, name: str) -> SplitFiles:
        """The files of split ``name`` (aliases such as "validation" accepted).

        Raises:
            DataError: If the split is not on disk, naming the splits that are.
        """
        key = canonical_split(name)
        if key not in self.splits:
            found = ", ".join(self.splits) or "none"
            raise DataError(
                f"split {name!r} not found in {self.root} ({self.title} layout); found: {found}"
            )
        return self.splits[key]

    def with_validation(
        self, cities: Sequence[str] | None = None, fraction: float | None = None
    ) -> DetectedLayout:
        """This layout with a val split carved from the train pairs (OSCD's cities).

        The pool is the train split plus any val split carved before, so carving again with
        other settings starts from the same pairs. ``fraction`` takes that share of the pool
        (at least one pair, and never all of them), chosen by a hash of each name: the same
        names give the same split on every machine, whatever else the folder holds.

        Args:
            cities: Names of the pairs that form the val split.
            fraction: Share of the pool that forms the val split, in (0, 1).

        Returns:
            The layout with ``train`` and ``val`` replaced; itself when both are None.

        Raises:
            ConfigError: If both are given, the dataset has a val split of its own, it has
                no train split, or a named city is not among the train pairs.
        """
        if cities is None and fraction is None:
            return self
        if cities is not None and fraction is not None:
            raise ConfigError("give data.val_cities or data.val_fraction, not both")
        val = self.splits.get("val")
        if val is not None and not val.carved:
            raise ConfigError(
                f"{self.root} has a val split of its own; data.val_cities and "
                "data.val_fraction carve one from the train split where there is none"
            )
        train = self.splits.get("train")
        if train is None:
            found = ", ".join(self.splits) or "none"
            raise ConfigError(f"no train split to carve a val split from (found: {found})")
        pool = sorted(
            train.samples + (val.samples if val is not None else ()),
            key=lambda s: _natural_key(s.name),
        )
        names = [s.name for s in pool]
        if cities is not None:
            unknown = [c for c in cities if c not in names]
            if unknown:
                raise ConfigError(
                    f"data.val_cities: {', '.join(unknown)} not among the train pairs "
                    f"({', '.join(names) or 'none'})"
                )
            chosen = set(cities)
        else:
            assert fraction is not None
            chosen = set(pick_fraction(names, fraction))
        splits = dict(self.splits)
        splits["train"] = replace(
            train, samples=tuple(s for s in pool if s.name not in chosen), carved=False
        )
        splits["val"] = replace(
            train,
            samples=tuple(s for s in pool if s.name in chosen),
            problems=(),
            carved=True,
        )
        return replace(self, splits=_ordered(splits))


def pick_fraction(names: Sequence[str], fraction: float) -> list[str]:
    """``fraction`` of ``names`` (at least one, never all but where there is only one).

    Pure and deterministic: names are ranked by a SHA-1 of the name, so a name's fate does not
    depend on Python's hash seed or on which other names there are beyond the count.

    Returns:
        The chosen names, in the order given.
    """
    if not names:
        return []
    count = min(max(1, math.ceil(fraction * len(names) - 1e-9)), max(1, len(names) - 1))
    ranked = sorted(names, key=lambda n: hashlib.sha1(n.encode()).hexdigest())
    chosen = set(ranked[:count])
    return [n for n in names if n in chosen]


def canonical_split(name: str) -> str:
    """``"Validation"`` -> ``"val"`` and so on; other names lower-cased."""
    key = name.lower()
    return _SPLIT_ALIASES.get(key, key)


def _natural_key(text: str) -> list[int | str]:
    # "tile_2" before "tile_10", as people number tiles.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def pair_names(
    listings: Sequence[Sequence[str]],
    folder_names: Sequence[str],
    wanted: Sequence[str] | None = None,
) -> tuple[list[tuple[str, list[str]]], list[str]]:
    """Match the file names of the t1, t2 and mask folders by name without extension.

    Pure: works on names only.

    Args:
        listings: Three lists of file names (t1, t2, mask folders).
        folder_names: The three folders' names, for the messages.
        wanted: Names (with or without extension) to pick, in order (a list file); None
            takes every name found in any folder, in natural order.

    Returns:
        ``(pairs, problems)``: ``pairs`` is a list of ``(name, [t1 file, t2 file, mask file])``;
        ``problems`` describes each name that lacks a file or is ambiguous.
    """
    by_stem: list[dict[str, list[str]]] = []
    for files in listings:
        table: dict[str, list[str]] = {}
        for file in files:
            table.setdefault(Path(file).stem, []).append(file)
        by_stem.append(table)
    if wanted is None:
        names = sorted(set().union(*by_stem), key=_natural_key)
    else:
        names = list(dict.fromkeys(Path(w).stem for w in wanted))
    pairs: list[tuple[str, list[str]]] = []
    problems: list[str] = []
    for name in names:
        missing = [
            folder for folder, table in zip(folder_names, by_stem, strict=True) if name not in table
        ]
        ambiguous = [
            f"{', '.join(sorted(table[name]))} in {folder}"
            for folder, table in zip(folder_names, by_stem, strict=True)
            if len(table.get(name, ())) > 1
        ]
        if missing:
            problems.append(f"{name}: no file in {', '.join(missing)}")
        elif ambiguous:
            problems.append(f"{name}: ambiguous ({'; '.join(ambiguous)})")
        else:
            pairs.append((name, [table[name][0] for table in by_stem]))
    return pairs, problems


def _child(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name``, ignoring case."""
    exact = parent / name
    if exact.is_dir():
        return exact
    lower = name.lower()
    for entry in sorted(parent.iterdir()):
        if entry.name.lower() == lower and entry.is_dir():
            return entry
    return None


def _image_files(folder: Path) -> list[str]:
    return [
        entry.name
        for entry in folder.iterdir()
        if entry.suffix.lower() in IMAGE_SUFFIXES
        and not entry.name.startswith(".")
        and entry.is_file()
    ]


def _triplet(parent: Path, names: tuple[str, str, str]) -> tuple[Path, Path, Path] | None:
    found = [_child(parent, name) for name in names]
    if any(f is None for f in found):
        return None
    t1, t2, mask = found
    assert t1 is not None and t2 is not None and mask is not None
    return t1, t2, mask


def _split_files(
    folders: tuple[Path, Path, Path],
    wanted: Sequence[str] | None = None,
    list_file: Path | None = None,
) -> SplitFiles:
    listings = [_image_files(folder) for folder in folders]
    pairs, problems = pair_names(listings, [f.name for f in folders], wanted)
    samples = tuple(
        Sample(name, folders[0] / t1, folders[1] / t2, folders[2] / mask)
        for name, (t1, t2, mask) in pairs
    )
    return SplitFiles(folders, samples, tuple(problems), list_file)


def _ordered(splits: dict[str, SplitFiles]) -> dict[str, SplitFiles]:
    known = [s for s in _SPLIT_ORDER if s in splits]
    rest = sorted(s for s in splits if s not in _SPLIT_ORDER)
    return {s: splits[s] for s in known + rest}


def _find_folder_layout(root: Path, names: tuple[str, str, str]) -> dict[str, SplitFiles]:
    splits: dict[str, SplitFiles] = {}
    containers = [root]
    subset = _child(root, "subset")  # CDD keeps its splits one level down
    if subset is not None:
        containers.append(subset)
    for container in containers:
        for entry in sorted(container.iterdir()):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            folders = _triplet(entry, names)
            if folders is not None:
                splits.setdefault(canonical_split(entry.name), _split_files(folders))
    if not splits:
        folders = _triplet(root, names)
        if folders is not None:
            splits[SINGLE_SPLIT] = _split_files(folders)
    return _ordered(splits)


def _find_list_layout(root: Path) -> dict[str, SplitFiles]:
    folders = _triplet(root, _FOLDER_LAYOUTS["levir"][1])
    lists = _child(root, "list")
    if folders is None or lists is None:
        return {}
    splits: dict[str, SplitFiles] = {}
    for list_file in sorted(lists.glob("*.txt")):
        lines = list_file.read_text().splitlines()
        wanted = [Path(line.strip()).name for line in lines if line.strip()]
        splits[canonical_split(list_file.stem)] = _split_files(folders, wanted, list_file)
    return _ordered(splits)


def _oscd_cities(images: Path) -> dict[str, Path]:
    cities = {}
    for entry in sorted(images.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            if _child(entry, "imgs_1") is not None and _child(entry, "imgs_2") is not None:
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
        cm = _child(folder, "cm")
        if cm is None:
            continue
        for entry in sorted(cm.iterdir()):
            if entry.name.lower() in (f"{city.lower()}-cm.tif", f"{city.lower()}-cm.tiff"):
                return entry, "oscd"
    for folder in folders:
        cm = _child(folder, "cm")
        if cm is not None and (cm / "cm.png").is_file():
            return cm / "cm.png", "change>0"
    return None


def _read_city_list(path: Path) -> list[str]:
    # train.txt is one line of comma-separated cities; newlines are accepted too.
    return [c.strip() for c in re.split(r"[,\n]", path.read_text()) if c.strip()]


def _find_oscd_layout(root: Path) -> dict[str, SplitFiles]:
    images = _child(root, _OSCD_IMAGES) or root
    cities = _oscd_cities(images)
    if not cities:
        return {}
    label_roots = [folder for name in _OSCD_LABELS if (folder := _child(root, name)) is not None]
    lists = {
        canonical_split(entry.stem): entry
        for entry in sorted(images.glob("*.txt"))
        if canonical_split(entry.stem) in _SPLIT_ORDER
    }
    wanted = {split: _read_city_list(path) for split, path in lists.items()}
    if not wanted:
        wanted = {"train": list(cities)}
    splits: dict[str, SplitFiles] = {}
    for split, names in wanted.items():
        samples, problems = [], []
        for city in dict.fromkeys(names):
            folder = cities.get(city)
            if folder is None:
                problems.append(f"{city}: no folder with imgs_1 and imgs_2 in {images}")
                continue
            imgs_1, imgs_2 = _child(folder, "imgs_1"), _child(folder, "imgs_2")
            assert imgs_1 is not None and imgs_2 is not None
            t1, missing_1 = _oscd_bands(imgs_1)
            t2, missing_2 = _oscd_bands(imgs_2)
            places = [folder, *(r / city for r in label_roots if (r / city).is_dir())]
            label = _oscd_label(places, city)
            missing = missing_1 + missing_2
            if label is None:
                missing.append(f"no change map ({city}-cm.tif or cm.png in cm/)")
            if missing:
                problems.append(f"{city}: {'; '.join(missing)}")
                continue
            assert label is not None
            samples.append(Sample(city, t1, t2, label[0], label[1]))
        folders = (images, images, label_roots[0] if label_roots else images)
        splits[split] = SplitFiles(folders, tuple(samples), tuple(problems), lists.get(split))
    return _ordered(splits)


def _looked_for(candidates: Sequence[str], folders: tuple[str, str, str] | None) -> str:
    parts = []
    for name in candidates:
        if name == "list":
            parts.append("A/B/label with list/*.txt (list files)")
        elif name == "oscd":
            parts.append("{city}/imgs_1/imgs_2/cm (OSCD)")
        elif name == "generic" and folders is not None:
            parts.append(f"{'/'.join(folders)} (generic)")
        elif name in _FOLDER_LAYOUTS:
            title, names = _FOLDER_LAYOUTS[name]
            parts.append(f"{'/'.join(names)} ({title})")
    return "; ".join(parts)


def detect_layout(
    root: str | Path,
    layout: str = "auto",
    folders: Sequence[str] | None = None,
) -> DetectedLayout:
    """Find which layout a dataset folder has, and its splits.

    Args:
        root: The dataset folder.
        layout: One of ``auto``, ``dsifn``, ``levir``, ``whu``, ``cdd``, ``sysu``,
            ``s2looking``, ``list``, ``oscd``, ``generic``. ``auto`` tries them in that order
            (``generic`` when ``folders`` is given).
        folders: ``(t1, t2, mask)`` folder names for the generic layout.

    Returns:
        The layout, with every split found (splits missing on disk are simply absent); OSCD's
        with a val split of :data:`OSCD_VAL_FRACTION` of its train cities.

    Raises:
        DataError: If ``root`` is not a folder, or no layout fits, listing what was looked for.
        ConfigError: If ``layout`` is unknown, or ``folders`` is given with a named layout.
    """
    check_choice("data.layout", layout, get_args(Layout))
    base = Path(root).expanduser()
    if not str(root) or not base.is_dir():
        raise DataError(f"data folder not found: {str(root) or '(empty path)'}")
    names = None if folders is None else tuple(str(f) for f in folders)
    if names is not None and len(names) != 3:
        raise ConfigError(f"folders must name three folders (t1, t2, mask); got {list(names)}")
    if names is not None and layout not in ("auto", "generic"):
        raise ConfigError(f"folders are for the generic layout; layout {layout!r} has its own")
    if layout == "generic" and names is None:
        raise ConfigError("the generic layout needs folders: the (t1, t2, mask) folder names")

    if names is not None:
        candidates: tuple[str, ...] = ("generic",)
    elif layout == "auto":
        candidates = _AUTO_ORDER
    else:
        candidates = (layout,)
    for name in candidates:
        if name == "list":
            splits = _find_list_layout(base)
            shape = _FOLDER_LAYOUTS["levir"][1]
        elif name == "oscd":
            splits = _find_oscd_layout(base)
            if splits:
                found = DetectedLayout(name=name, splits=splits, root=base, folders=_OSCD_FOLDERS)
                if "train" in splits and len(splits["train"].samples) > 1:
                    found = found.with_validation(fraction=OSCD_VAL_FRACTION)
                return found
            continue
        else:
            shape = names if name == "generic" and names is not None else _FOLDER_LAYOUTS[name][1]
            splits = _find_folder_layout(base, shape)
        if splits:
            return DetectedLayout(name=name, splits=splits, root=base, folders=shape)
    raise DataError(
        f"no dataset layout found in {base}: looked for {_looked_for(candidates, names)}, "
        "in split folders (train/val/test) or directly under the root; for other folder names "
        "use the generic layout with folders (t1, t2, mask)"
    )
