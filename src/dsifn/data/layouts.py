"""Finding the image pairs and masks of a dataset in the folder layouts it is distributed in.

Layouts, as the datasets are distributed:

======================  ==============================================================
``dsifn``               DSIFN-CD: ``{split}/{t1,t2,mask}``
``levir`` (``whu``)     LEVIR-CD and WHU-CD: ``{split}/{A,B,label}``
``cdd``                 CDD: ``subset/{split}/{A,B,OUT}`` (or without ``subset/``)
``sysu``                SYSU-CD: ``{split}/{time1,time2,label}``
``s2looking``           S2Looking: ``{split}/{Image1,Image2,label}``
``list``                BIT / ChangeFormer style: ``A/``, ``B/``, ``label/``, ``list/{split}.txt``
``generic``             the user's three folder names, under split folders or directly under root
======================  ==============================================================

Every folder layout also accepts its three folders directly under the root, read as one split
called ``"all"``. Folder names match case-insensitively. Files pair up by name without
extension (a mask may be ``.tif`` where the images are ``.png``). Split folders named
``training``, ``valid``, ``validation`` or ``testing`` are called ``train``, ``val`` and ``test``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from dsifn._validation import check_choice
from dsifn.data.config import Layout
from dsifn.errors import ConfigError, DataError
from dsifn.io.images import IMAGE_SUFFIXES

__all__ = [
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
_AUTO_ORDER = ("list", "dsifn", "levir", "cdd", "sysu", "s2looking")
_SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}
_SPLIT_ORDER = ("train", "val", "test")
# The split name of three folders found directly under the root.
SINGLE_SPLIT = "all"


@dataclass(frozen=True)
class Sample:
    """The three files of one labelled pair."""

    name: str  # file name without extension, unique within its split
    t1: Path  # image of the first date
    t2: Path  # image of the second date
    mask: Path  # change mask


@dataclass(frozen=True)
class SplitFiles:
    """The files of one split, and what is wrong with its listing."""

    folders: tuple[Path, Path, Path]  # (t1, t2, mask) folders
    samples: tuple[Sample, ...]  # complete pairs, in name (or list-file) order
    problems: tuple[str, ...] = ()  # files without partners, ambiguous names
    list_file: Path | None = None  # the list layout's file naming the pairs


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
        return _FOLDER_LAYOUTS[self.name][0]

    @property
    def shape(self) -> str:
        """The folder names, e.g. ``A/B/label``."""
        text = "/".join(self.folders)
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
        Sample(name, *(folder / file for folder, file in zip(folders, files, strict=True)))
        for name, files in pairs
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


def _looked_for(candidates: Sequence[str], folders: tuple[str, str, str] | None) -> str:
    parts = []
    for name in candidates:
        if name == "list":
            parts.append("A/B/label with list/*.txt (list files)")
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
            ``s2looking``, ``list``, ``generic``. ``auto`` tries them in that order
            (``generic`` when ``folders`` is given).
        folders: ``(t1, t2, mask)`` folder names for the generic layout.

    Returns:
        The layout, with every split found (splits missing on disk are simply absent).

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
