"""Checks of a whole dataset before training, and per-band statistics for normalisation."""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from dsifn.data.config import DataConfig
from dsifn.data.dataset import (
    load_pair,
    read_dates,
    resolve_layout,
    settle_radiometry,
    summarize,
)
from dsifn.data.layouts import DetectedLayout, Sample, canonical_split
from dsifn.errors import DataError, InputError

__all__ = ["band_stats_from_sums", "check_splits", "compute_band_stats"]

T = TypeVar("T")
R = TypeVar("R")


def _threads() -> int:
    # Decoders (Pillow, GDAL) release the GIL, so a few threads read files in parallel.
    return min(8, os.cpu_count() or 1)


def _map(
    function: Callable[[T], R], items: Sequence[T], progress: bool, description: str
) -> Iterable[R]:
    from dsifn.progress import progress_bar

    with ThreadPoolExecutor(_threads()) as pool:
        yield from progress_bar(
            len(items),
            description,
            "pair",
            enabled=progress,
            leave=False,
            iterable=pool.map(function, items),
        )


def check_splits(
    config: DataConfig,
    splits: Sequence[str] = ("train", "val", "test"),
    *,
    layout: DetectedLayout | None = None,
    progress: bool = True,
) -> list[str]:
    """Read every file of the given splits and check the dataset is usable.

    Splits missing on disk are skipped (the caller decides whether it needs them). Every pair
    is read in full, so truncated or corrupt files are found now rather than hours into
    training.

    Args:
        config: The dataset.
        splits: Split names to check.
        layout: An already detected layout of ``config.root``.
        progress: Show a progress bar.

    Returns:
        Warnings, also issued with :func:`warnings.warn`: pairs whose T1 and T2 pixels are
        identical in two splits (public copies of DSIFN-CD leak test tiles into train), one
        string per pair of splits, naming the first of them and their count.

    Raises:
        DataError: One message listing the first offenders and their count: files without
            partners, ambiguous names, size or band-count mismatches between the dates or with
            the mask, unreadable files, bands that do not exist.
    """
    found = resolve_layout(config, layout)
    config = settle_radiometry(config, found)
    problems: list[str] = []
    hashes: dict[str, dict[str, str]] = {}  # split -> pixel hash -> pair name
    for split in dict.fromkeys(canonical_split(s) for s in splits):
        if split not in found.splits:
            continue
        files = found.splits[split]
        problems.extend(f"{split}/{problem}" for problem in files.problems)

        table: dict[str, str] = {}
        checked = _map(_check_pair(config), files.samples, progress, f"checking {split}")
        for name, digest, error in checked:
            if error is not None:
                problems.append(f"{split}/{error}")
            elif digest is not None:
                table.setdefault(digest, name)
        hashes[split] = table
    if problems:
        raise DataError(f"dataset {found.root} is not usable: {summarize(problems, 'problem(s)')}")
    return _duplicates(hashes)


def _check_pair(config: DataConfig) -> Callable[[Sample], tuple[str, str | None, str | None]]:
    def check(sample: Sample) -> tuple[str, str | None, str | None]:
        """``(name, hash of the T1+T2 pixels, None)`` or ``(name, None, the problem)``."""
        try:
            image = load_pair(sample, config)[0]
        except (DataError, InputError) as exc:
            text = str(exc)
            if not text.startswith(f"{sample.name}:"):
                text = f"{sample.name}: {text}"
            return sample.name, None, text
        return sample.name, hashlib.sha1(image.tobytes()).hexdigest(), None

    return check


def _duplicates(hashes: dict[str, dict[str, str]]) -> list[str]:
    messages = []
    names = list(hashes)
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            same = [
                f"{second}/{hashes[second][digest]} = {first}/{name}"
                for digest, name in hashes[first].items()
                if digest in hashes[second]
            ]
            if same:
                text = summarize(same, f"pair(s) of {second} also in {first} (identical pixels)")
                messages.append(text)
                warnings.warn(text, UserWarning, stacklevel=3)
    return messages


def band_stats_from_sums(
    count: int, total: NDArray[np.float64], squares: NDArray[np.float64]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and (population) standard deviation per band from running sums.

    Args:
        count: Number of values per band.
        total: (C,) sum of values.
        squares: (C,) sum of squared values.

    Returns:
        ``(mean, std)``, one float per band.
    """
    if count == 0:
        raise DataError("no valid pixels to compute band statistics from")
    mean = total / count
    variance = np.maximum(squares / count - mean**2, 0.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in np.sqrt(variance))


def compute_band_stats(
    config: DataConfig,
    split: str = "train",
    max_images: int | None = None,
    *,
    layout: DetectedLayout | None = None,
    progress: bool = True,
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-band mean and standard deviation of a split's [0, 1]-scaled pixels, both dates.

    Pixels without data (nodata, transparent) are left out; ignored labels are not (the image
    is still valid there). Sums are kept in float64, so the result does not depend on the order
    in which images are read.

    Args:
        config: The dataset (band selection and scaling apply).
        split: Which split to measure.
        max_images: Use at most this many pairs, spread evenly over the split; None uses all.
        layout: An already detected layout of ``config.root``.
        progress: Show a progress bar.

    Returns:
        ``(mean, std)``: one float per band each, for a training config's normalisation.

    Raises:
        DataError: If the split is missing or a file is unreadable or inconsistent.
    """
    found = resolve_layout(config, layout)
    config = settle_radiometry(config, found)
    files = found.split(split)
    samples = list(files.samples)
    if not samples:
        raise DataError(f"split {split} of {found.root} holds no image pairs")
    if max_images is not None:
        if max_images < 1:
            raise DataError(f"max_images must be at least 1; got {max_images}")
        if max_images < len(samples):
            picks = np.linspace(0, len(samples) - 1, max_images).round().astype(int)
            samples = [samples[i] for i in dict.fromkeys(picks.tolist())]

    def sums(sample: Sample) -> tuple[int, NDArray[np.float64], NDArray[np.float64]]:
        pair = read_dates(sample, config)
        image, has_data = pair.values, pair.valid
        bands = image.shape[1]
        values = image.transpose(1, 0, 2, 3).reshape(bands, -1).astype(np.float64)
        values = values[:, np.tile(has_data.reshape(-1), 2)]
        return values.shape[1], values.sum(axis=1), (values**2).sum(axis=1)

    count = 0
    total: NDArray[np.float64] | None = None
    squares: NDArray[np.float64] | None = None
    for n, s, q in _map(sums, samples, progress, f"statistics of {split}"):
        count += n
        total = s if total is None else total + s
        squares = q if squares is None else squares + q
    assert total is not None and squares is not None
    return band_stats_from_sums(count, total, squares)
