"""The change-detection dataset: one split of image pairs and masks as tensors."""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch.utils.data import Dataset

from dsifn.contract import say
from dsifn.data.augment import (
    augment_sample,
    augment_window,
    crop_side,
    crop_window,
    draw_scale,
    sample_generator,
)
from dsifn.data.config import DataConfig
from dsifn.data.layouts import DetectedLayout, Sample, detect_layout
from dsifn.data.readers import read_mask
from dsifn.errors import DataError
from dsifn.io.images import is_plain, open_image, source_names
from dsifn.io.pairs import PairData, open_pair
from dsifn.io.radiometry import Unit
from dsifn.scaling import Scaling

__all__ = [
    "ChangeDetectionDataset",
    "load_pair",
    "read_dates",
    "read_label",
    "resolve_layout",
    "settle_radiometry",
    "summarize",
]

# How many offenders an error message names before it just counts the rest.
_SHOWN = 5


def resolve_layout(config: DataConfig, layout: DetectedLayout | None = None) -> DetectedLayout:
    """The layout of ``config.root`` (detected unless given) with the config's val split.

    ``data.val_cities`` / ``data.val_fraction`` carve the val split from the train pairs
    (:meth:`DetectedLayout.with_validation`); applying it again to its own result changes
    nothing, so every reader of the data may call it.
    """
    found = layout or detect_layout(
        config.root, config.layout, config.folders, oscd_rect=config.oscd_rect
    )
    return found.with_validation(config.val_cities, config.val_fraction)


def _sample_unit(config: DataConfig, sample: Sample) -> Unit:
    """``data.radiometry`` "auto" decided by one pair: reflectance where the data says how.

    Reflectance when no ``data.scale`` is given (a scale is one of digital numbers) and the
    layout knows the pair's digital numbers (OSCD) or its T1 files state a scale and offset
    for every band used.
    """
    if config.scale is not None:
        return "dn"
    if sample.known is not None:
        return "reflectance"
    if is_plain(source_names(sample.t1)):
        return "dn"  # PNG, JPEG, BMP state nothing
    with open_image(sample.t1, bands=config.bands, nodata=config.nodata) as source:
        stated = source.stated_conversions()
    return "reflectance" if stated and all(stated) else "dn"


def settle_radiometry(config: DataConfig, layout: DetectedLayout) -> DataConfig:
    """``config`` with ``radiometry`` "auto" decided for the dataset, from its first pair.

    The first pair of the first split (train where there is one) decides, so every reader of
    the dataset (training, validation, checks, statistics) decides alike.
    """
    if config.radiometry != "auto":
        return config
    first = next((f.samples[0] for f in layout.splits.values() if f.samples), None)
    unit: Unit = "dn" if first is None else _sample_unit(config, first)
    return dataclasses.replace(config, radiometry=unit)


# What the pair reader said about each pair (by its T1 files), said once per process; the
# lock keeps a line said once when threads read pairs (dsifn.data.checks).
_SAID: dict[str, set[str]] = {}
_SAID_LOCK = threading.Lock()


def read_dates(
    sample: Sample,
    config: DataConfig,
    window: tuple[int, int, int, int] | None = None,
    *,
    scaling: Scaling | None = None,
) -> PairData:
    """Read both dates of one sample through the one pair reader (:mod:`dsifn.io.pairs`).

    What the reader finds worth a line (T2 resampled onto T1's grid, an offset) is said once
    per pair and process, prefixed by the pair's name.

    Args:
        sample: The pair's files (an image each, or band files stacked onto the finest grid).
        config: Band selection, unit, scaling, nodata and resampling; its ``radiometry``
            decided for the dataset (:func:`settle_radiometry`), not ``"auto"``.
        window: ``(row, col, height, width)`` to read alone, clipped to the image; None:
            the whole image.
        scaling: The pair's scaling when already known; None: resolved from the whole pair
            (a percentile stretch samples it whole, whatever the window).

    Returns:
        (2, C, H, W) float32 values in [0, 1], T1 then T2, 0 where either date has no data;
        (H, W) validity, True where both dates have data; the scaling used.

    Raises:
        ConfigError: If ``config.radiometry`` is still ``"auto"``.
        DataError: If a file is unreadable, the dates differ in size or band count (or, for a
            layout that aligns them, do not overlap).
        InputError: If a file is missing or a selected band does not exist.
    """
    reading = config.reading(known=sample.known)
    try:
        with open_pair(sample.t1, sample.t2, reading, align=sample.align, scaling=scaling) as pair:
            with _SAID_LOCK:
                said = _SAID.setdefault(sample.where("T1"), set())
                say([f"{sample.name}: {line}" for line in pair.notices], said)
            return pair.read(*(window or (0, 0, None, None)))
    except DataError as exc:
        raise DataError(f"{sample.name}: {exc}") from exc


def load_pair(
    sample: Sample, config: DataConfig, *, scaling: Scaling | None = None
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_], NDArray[np.bool_]]:
    """Read one sample's files into arrays (no augmentation).

    Args:
        sample: The three files.
        config: Band selection, scaling, nodata and ignore value.
        scaling: The pair's scaling when already known (:func:`read_dates`).

    Returns:
        ``(image, mask, valid, has_data)``: (2, C, H, W) float32 in [0, 1] (T1 then T2; 0
        where there is no data), (1, H, W) float32 0/1, (1, H, W) bool (False where the label
        is ignored or either date has no data), (1, H, W) bool (True where both dates have
        data).

    Raises:
        DataError: If a file is unreadable, the dates differ in size or band count, the mask
            differs in size, or a selected band does not exist.
    """
    return _with_label(sample, config, read_dates(sample, config, scaling=scaling))


def _with_label(
    sample: Sample, config: DataConfig, pair: PairData
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_], NDArray[np.bool_]]:
    """:func:`load_pair`'s arrays from the whole pair read: the label read and checked."""
    mask, valid = read_label(sample, config)
    if mask.shape[-2:] != pair.values.shape[-2:]:
        raise DataError(
            f"{sample.name}: mask {_size(mask)} in {sample.mask} but images {_size(pair.values)}"
        )
    has_data = pair.valid[None]
    return pair.values, mask, valid & has_data, has_data


def read_label(sample: Sample, config: DataConfig) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """The sample's mask decoded by its layout's coding: (1, H, W) 0/1 change and valid."""
    return read_mask(sample.mask, ignore_value=config.ignore_value, coding=sample.coding)


def _size(array: NDArray[Any]) -> str:
    return f"{array.shape[-1]}x{array.shape[-2]}"


def summarize(problems: Sequence[str], what: str) -> str:
    """``"7 problem(s): a; b; c; d; e; and 2 more"``: the count and the first offenders."""
    shown = "; ".join(problems[:_SHOWN])
    more = f"; and {len(problems) - _SHOWN} more" if len(problems) > _SHOWN else ""
    return f"{len(problems)} {what}: {shown}{more}"


class ChangeDetectionDataset(Dataset[dict[str, Any]]):
    """One split of a change-detection dataset on disk.

    A sample is ``{"image": (2, C, H, W) float32 in [0, 1] (T1 then T2), "mask": (1, H, W)
    float32 0/1, "valid": (1, H, W) bool, "name": str}``; whole (not training) samples also
    carry ``"has_data"``, (1, H, W) bool, True where both dates have data. Normalisation is not
    applied: the training engine applies the model's own (``model.config.input_normalization``).

    With ``train=True`` each sample is randomly cropped to ``config.crop_size`` (if set) and
    augmented by ``config.augment``. A crop holds at least ``config.crop_min_valid`` valid
    pixels where one can be found in a few draws, and only its window of the dates is read
    (a 13-band OSCD city is not read whole for a 96-pixel crop; a percentile stretch is
    sampled from the whole pair once). An epoch holds one crop per image, or, with
    ``config.samples_per_epoch`` (and by default for scene datasets, OSCD), that many crops,
    each from an image drawn in proportion to its valid area (:class:`CropPlan`). The
    randomness is a pure function of (``seed``, epoch, index), so any number of loader
    workers, or a resumed run, gives the same samples. The epoch lives in shared memory, so
    :meth:`set_epoch` reaches persistent loader workers too.

    ``config.radiometry`` "auto" is decided once for the dataset (:func:`settle_radiometry`);
    :attr:`config` holds the decision.

    With ``train=False`` samples are full images, exactly as on disk: no augmentation and no
    crop even when ``crop_size`` is set (the network takes any size of at least 16 pixels;
    cutting scenes into tiles is the job of scene inference).

    Args:
        config: Where the data is and how to read it.
        split: ``"train"``, ``"val"``, ``"test"`` (or another split found on disk; ``"all"``
            for three folders directly under the root).
        train: Whether to crop and augment.
        seed: Seed of the augmentation.
        layout: An already detected layout of ``config.root``, to skip detecting it again.

    Raises:
        DataError: If the split is not on disk or has files without partners.
    """

    def __init__(
        self,
        config: DataConfig,
        split: str,
        *,
        train: bool = False,
        seed: int = 0,
        layout: DetectedLayout | None = None,
    ) -> None:
        self.split = split
        self.train = train
        self.seed = seed
        self.layout = resolve_layout(config, layout)
        self.config = settle_radiometry(config, self.layout)
        files = self.layout.split(split)
        if files.problems:
            where = f"split {split} of {self.layout.root}"
            raise DataError(summarize(files.problems, f"incomplete pair(s) in {where}"))
        if not files.samples:
            raise DataError(f"split {split} of {self.layout.root} holds no image pairs")
        self.samples: tuple[Sample, ...] = files.samples
        self.names: list[str] = [s.name for s in self.samples]
        self.bands: int = self._band_count()
        self.crops: CropPlan | None = self._crop_plan() if train else None
        self._stretches: dict[int, Scaling] = {}  # each pair's percentile stretch, once
        # Shared memory: loader workers (forked, spawned, persistent) see set_epoch's value.
        self._epoch = torch.zeros((), dtype=torch.int64)
        self._epoch.share_memory_()  # type: ignore[no-untyped-call]

    def _crop_plan(self) -> CropPlan | None:
        """Crops per epoch and their images' weights, or None for one crop per image."""
        config = self.config
        if config.crop_size is None:
            return None
        if config.samples_per_epoch is None and not self.layout.scenes:
            return None
        areas = [int(read_label(s, config)[1].sum()) for s in self.samples]
        return CropPlan.of(areas, config.crop_size, config.samples_per_epoch)

    def _band_count(self) -> int:
        # Opening the first file with the band selection refuses bands it does not have.
        first = self.samples[0].t1
        with open_image(first, bands=self.config.bands, nodata=self.config.nodata) as source:
            return source.count

    @property
    def epoch(self) -> int:
        """The epoch last given to :meth:`set_epoch` (0 at first)."""
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentations the following samples get."""
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        """Images, or crops per epoch where a :class:`CropPlan` draws them."""
        return len(self.samples) if self.crops is None else self.crops.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        index = index % len(self)
        config = self.config
        generator = sample_generator(self.seed, self.epoch, index)
        if self.crops is not None:
            drawn = self.crops.draw(generator)  # the image this crop index comes from
            return self._windowed(drawn, self.samples[drawn], generator)
        sample = self.samples[index]
        if self.train and config.crop_size is not None:
            return self._windowed(index, sample, generator)
        arrays = _with_label(sample, config, self._dates(index, sample))
        image, mask, valid, has_data = (torch.from_numpy(a) for a in arrays)
        if not self.train:
            return {
                "image": image,
                "mask": mask,
                "valid": valid,
                "has_data": has_data,
                "name": sample.name,
            }
        image, mask, valid = augment_sample(
            image,
            mask,
            valid,
            config.augment,
            generator,
            config.crop_size,
            config.crop_min_valid,
        )
        return {"image": image, "mask": mask, "valid": valid, "name": sample.name}

    def _windowed(self, index: int, sample: Sample, generator: torch.Generator) -> dict[str, Any]:
        """A training crop of image ``index``, reading only its window of the dates.

        The window is drawn from the label's valid pixels (the mask is read whole: one band),
        then the dates' no-data pixels in it are marked not valid too.
        """
        config = self.config
        crop_size = config.crop_size
        assert crop_size is not None
        mask_np, label_ok = read_label(sample, config)
        mask, valid = torch.from_numpy(mask_np), torch.from_numpy(label_ok)
        side = crop_side(crop_size, draw_scale(config.augment, generator))
        top, left = crop_window(valid, side, generator, config.crop_min_valid)
        pair = self._dates(index, sample, (top, left, side, side))
        image_np, has_data = pair.values, pair.valid
        height, width = has_data.shape
        full_h, full_w = mask_np.shape[-2:]
        # Images larger than the mask pass here unseen; check_splits finds those (whole reads).
        if (height, width) != (min(side, full_h - top), min(side, full_w - left)):
            raise DataError(
                f"{sample.name}: mask {full_w}x{full_h} in {sample.mask} but the images are smaller"
            )
        valid[:, top : top + height, left : left + width] &= torch.from_numpy(has_data)
        image, mask, valid = augment_window(
            torch.from_numpy(image_np),
            mask,
            valid,
            (top, left, side),
            config.augment,
            generator,
            crop_size,
        )
        return {"image": image, "mask": mask, "valid": valid, "name": sample.name}

    def _dates(
        self, index: int, sample: Sample, window: tuple[int, int, int, int] | None = None
    ) -> PairData:
        """:func:`read_dates` of image ``index``, its percentile stretch resolved once.

        Fixed rules cost nothing to resolve; a stretch samples the whole pair (whatever the
        window), which the first read of the pair resolves and every later read, each crop
        of it, reuses (once per pair and process).
        """
        if self.config.stretch is None:
            return read_dates(sample, self.config, window)
        pair = read_dates(sample, self.config, window, scaling=self._stretches.get(index))
        self._stretches.setdefault(index, pair.scaling)
        return pair

    def __repr__(self) -> str:
        mode = "train" if self.train else "eval"
        crops = "" if self.crops is None else f", {self.crops.count} crops per epoch"
        return (
            f"ChangeDetectionDataset({self.layout.root}, split={self.split!r}, "
            f"{len(self.samples)} pairs{crops}, {self.bands} bands, {mode})"
        )


@dataclasses.dataclass(frozen=True)
class CropPlan:
    """An epoch of ``count`` random crops, each from an image drawn by its valid area.

    Like torchgeo's ``RandomGeoSampler``: its length is the number of crops an epoch draws,
    and an image's chance is its share of the split's valid (labelled) pixels, so a city
    three times the size of another gives three times the crops.
    """

    count: int  # crops per epoch
    cumulative: tuple[float, ...]  # per image: its cumulative share of the valid area, to 1

    @classmethod
    def of(cls, areas: Sequence[int], crop_size: int, count: int | None) -> CropPlan:
        """The plan for images of ``areas`` valid pixels each.

        Args:
            areas: Valid pixels per image.
            crop_size: Side of a crop.
            count: Crops per epoch; None: as many as the valid area holds crops,
                ``ceil(sum(areas) / crop_size**2)``, so an epoch sees about every valid pixel
                once.

        Raises:
            DataError: If no image has a valid pixel.
        """
        total = float(sum(areas))
        if total <= 0:
            raise DataError("no image of the split has a labelled pixel to crop from")
        if count is None:
            count = max(1, math.ceil(total / crop_size**2))
        shares = np.cumsum(np.asarray(areas, dtype=np.float64) / total)
        shares[-1] = 1.0
        return cls(count, tuple(float(v) for v in shares))

    def draw(self, generator: torch.Generator) -> int:
        """The image of one crop: one uniform draw of ``generator``, by valid area."""
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        return min(int(np.searchsorted(self.cumulative, u, side="right")), len(self.cumulative) - 1)
