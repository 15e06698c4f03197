"""Finding the image pairs and masks of a dataset in the folder layouts it is distributed in.

Layouts, as the datasets are distributed:

======================  ==============================================================
``dsifn``               DSIFN-CD: ``{split}/{t1,t2,mask}``
``levir`` (``whu``)     LEVIR-CD and WHU-CD: ``{split}/{A,B,label}``
``cdd``                 CDD: ``subset/{split}/{A,B,OUT}`` (or without ``subset/``)
``sysu``                SYSU-CD: ``{split}/{time1,time2,label}``
``s2looking``           S2Looking: ``{split}/{Image1,Image2,label}``
``list``                BIT / ChangeFormer style: ``A/``, ``B/``, ``label/``, ``list/{split}.txt``
``oscd``                OSCD as downloaded: ``{city}/{imgs_1[_rect],imgs_2[_rect]}``, labels apart
``generic``             the user's three folder names, under split folders or directly under root
======================  ==============================================================

Every folder layout also accepts its three folders directly under the root, read as one split
called ``"all"``. Folder names match case-insensitively. Files pair up by name without
extension (a mask may be ``.tif`` where the images are ``.png``). Split folders named
``training``, ``valid``, ``validation`` or ``testing`` are called ``train``, ``val`` and ``test``.

OSCD (:mod:`dsifn.data.oscd`) has no val split: :meth:`DetectedLayout.with_validation` carves
one from the train cities, by default :data:`~dsifn.data.oscd.OSCD_VAL_FRACTION` of them. Its
cities are scenes (:attr:`DetectedLayout.scenes`): an epoch draws crops from them by area.

A named layout that does not fit the folder is refused with the layout the folder holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import get_args

from dsifn._validation import check_choice
from dsifn.data.config import Layout
from dsifn.data.oscd import OSCD_BANDS, OSCD_VAL_FRACTION, find_oscd_layout, oscd_folders
from dsifn.data.pairs import (
    SINGLE_SPLIT,
    Sample,
    SplitFiles,
    canonical_split,
    child_folder,
    image_files,
    natural_key,
    ordered_splits,
    pair_names,
    pick_fraction,
)
from dsifn.errors import ConfigError, DataError

__all__ = [
    "OSCD_BANDS",
    "OSCD_VAL_FRACTION",
    "DetectedLayout",
    "Sample",
    "SplitFiles",
    "canonical_split",
    "detect_layout",
    "pair_names",
    "pick_fraction",
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
    def scenes(self) -> bool:
        """Whether its images are scenes: a few, each many training crops (OSCD's cities)."""
        return self.name == "oscd"

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

    def require(self, splits: Sequence[str], why: str) -> None:
        """Refuse a layout that lacks one of ``splits`` (as named on disk), saying ``why``.

        Raises:
            DataError: Naming the first missing split, the splits found and ``why``.
        """
        for split in splits:
            if split not in self.splits:
                found = ", ".join(self.splits) or "none"
                raise DataError(f"{self.root} has no {split!r} split (found: {found}); {why}")

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
            key=lambda s: natural_key(s.name),
        )
        chosen = _chosen([s.name for s in pool], cities, fraction)
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
        return replace(self, splits=ordered_splits(splits))


def _chosen(names: list[str], cities: Sequence[str] | None, fraction: float | None) -> set[str]:
    """The names of the val split: the cities named, else ``fraction`` of ``names``."""
    if cities is None:
        assert fraction is not None
        return set(pick_fraction(names, fraction))
    unknown = [c for c in cities if c not in names]
    if unknown:
        raise ConfigError(
            f"data.val_cities: {', '.join(unknown)} not among the train pairs "
            f"({', '.join(names) or 'none'})"
        )
    return set(cities)


def _triplet(parent: Path, names: tuple[str, str, str]) -> tuple[Path, Path, Path] | None:
    found = [child_folder(parent, name) for name in names]
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
    listings = [image_files(folder) for folder in folders]
    pairs, problems = pair_names(listings, [f.name for f in folders], wanted)
    samples = tuple(
        Sample(name, folders[0] / t1, folders[1] / t2, folders[2] / mask)
        for name, (t1, t2, mask) in pairs
    )
    return SplitFiles(folders, samples, tuple(problems), list_file)


def _find_folder_layout(root: Path, names: tuple[str, str, str]) -> dict[str, SplitFiles]:
    splits: dict[str, SplitFiles] = {}
    containers = [root]
    subset = child_folder(root, "subset")  # CDD keeps its splits one level down
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
    return ordered_splits(splits)


def _find_list_layout(root: Path) -> dict[str, SplitFiles]:
    folders = _triplet(root, _FOLDER_LAYOUTS["levir"][1])
    lists = child_folder(root, "list")
    if folders is None or lists is None:
        return {}
    splits: dict[str, SplitFiles] = {}
    for list_file in sorted(lists.glob("*.txt")):
        lines = list_file.read_text().splitlines()
        wanted = [Path(line.strip()).name for line in lines if line.strip()]
        splits[canonical_split(list_file.stem)] = _split_files(folders, wanted, list_file)
    return ordered_splits(splits)


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


def _folder_names(layout: str, folders: Sequence[str] | None) -> tuple[str, str, str] | None:
    """The generic layout's (t1, t2, mask) folder names, checked against ``layout``."""
    if folders is None:
        if layout == "generic":
            raise ConfigError("the generic layout needs folders: the (t1, t2, mask) folder names")
        return None
    names = tuple(str(f) for f in folders)
    if len(names) != 3:
        raise ConfigError(f"folders must name three folders (t1, t2, mask); got {list(names)}")
    if layout not in ("auto", "generic"):
        raise ConfigError(f"folders are for the generic layout; layout {layout!r} has its own")
    return names[0], names[1], names[2]


def detect_layout(
    root: str | Path,
    layout: str = "auto",
    folders: Sequence[str] | None = None,
    *,
    oscd_rect: bool = True,
) -> DetectedLayout:
    """Find which layout a dataset folder has, and its splits.

    Args:
        root: The dataset folder (for OSCD, any of the download's three folders too).
        layout: One of ``auto``, ``dsifn``, ``levir``, ``whu``, ``cdd``, ``sysu``,
            ``s2looking``, ``list``, ``oscd``, ``generic``. ``auto`` tries them in that order
            (``generic`` when ``folders`` is given).
        folders: ``(t1, t2, mask)`` folder names for the generic layout.
        oscd_rect: OSCD: read ``imgs_*_rect`` where the download has them.

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
    names = _folder_names(layout, folders)
    if names is not None:
        candidates: tuple[str, ...] = ("generic",)
    elif layout == "auto":
        candidates = _AUTO_ORDER
    else:
        candidates = (layout,)
    found = _first_found(base, candidates, names, oscd_rect)
    if found is not None:
        return found
    other = None if layout == "auto" else _first_found(base, _AUTO_ORDER, None, oscd_rect)
    hint = "" if other is None else f"; it holds the {other.title} layout: `data.layout=auto`"
    raise DataError(
        f"no dataset layout found in {base}: looked for {_looked_for(candidates, names)}, "
        "in split folders (train/val/test) or directly under the root; for other folder names "
        f"use the generic layout with folders (t1, t2, mask){hint}"
    )


def _first_found(
    base: Path,
    candidates: Sequence[str],
    names: tuple[str, str, str] | None,
    oscd_rect: bool,
) -> DetectedLayout | None:
    """The first of ``candidates`` found in ``base``, or None."""
    for name in candidates:
        if name == "list":
            splits = _find_list_layout(base)
            shape = _FOLDER_LAYOUTS["levir"][1]
        elif name == "oscd":
            splits = find_oscd_layout(base, rect=oscd_rect)
            if splits:
                shape = oscd_folders(splits)
                found = DetectedLayout(name=name, splits=splits, root=base, folders=shape)
                if "train" in splits and len(splits["train"].samples) > 1:
                    found = found.with_validation(fraction=OSCD_VAL_FRACTION)
                return found
            continue
        else:
            shape = names if name == "generic" and names is not None else _FOLDER_LAYOUTS[name][1]
            splits = _find_folder_layout(base, shape)
        if splits:
            return DetectedLayout(name=name, splits=splits, root=base, folders=shape)
    return None
