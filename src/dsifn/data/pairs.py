"""The files of a dataset's pairs: samples, splits, and pairing files by name."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from dsifn.data.readers import LabelCoding
from dsifn.io.images import IMAGE_SUFFIXES
from dsifn.io.radiometry import Conversion

__all__ = [
    "SINGLE_SPLIT",
    "SPLIT_ORDER",
    "Sample",
    "SplitFiles",
    "canonical_split",
    "child_folder",
    "image_files",
    "natural_key",
    "ordered_splits",
    "pair_names",
    "pick_fraction",
]

_SPLIT_ALIASES = {"training": "train", "valid": "val", "validation": "val", "testing": "test"}
SPLIT_ORDER = ("train", "val", "test")  # how splits are listed; others follow by name
SINGLE_SPLIT = "all"  # the split of three folders found directly under the root


@dataclass(frozen=True)
class Sample:
    """The files of one labelled pair."""

    name: str  # file name without extension (OSCD: the city), unique within its split
    t1: Path | tuple[Path, ...]  # image of the first date, or its band files in order
    t2: Path | tuple[Path, ...]  # image of the second date, or its band files in order
    mask: Path  # change mask
    coding: LabelCoding = "change>0"  # how the mask codes its labels
    # Resample T2 onto T1's grid where they differ (OSCD: the change map is on T1's grid).
    align: bool = False
    known: Conversion | None = None  # what the dataset knows of its digital numbers (OSCD)

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


def natural_key(text: str) -> list[int | str]:
    """Sort key that puts "tile_2" before "tile_10", as people number tiles."""
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
        names = sorted(set().union(*by_stem), key=natural_key)
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


def child_folder(parent: Path, name: str) -> Path | None:
    """The sub-folder of ``parent`` called ``name``, ignoring case."""
    exact = parent / name
    if exact.is_dir():
        return exact
    lower = name.lower()
    for entry in sorted(parent.iterdir()):
        if entry.name.lower() == lower and entry.is_dir():
            return entry
    return None


def image_files(folder: Path) -> list[str]:
    """Names of the image files in ``folder`` (hidden files and other suffixes left out)."""
    return [
        entry.name
        for entry in folder.iterdir()
        if entry.suffix.lower() in IMAGE_SUFFIXES
        and not entry.name.startswith(".")
        and entry.is_file()
    ]


def ordered_splits(splits: dict[str, SplitFiles]) -> dict[str, SplitFiles]:
    """``splits`` in :data:`SPLIT_ORDER`, then the others by name."""
    known = [s for s in SPLIT_ORDER if s in splits]
    rest = sorted(s for s in splits if s not in SPLIT_ORDER)
    return {s: splits[s] for s in known + rest}
