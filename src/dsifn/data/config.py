"""Configuration of the dataset readers and of training-time augmentation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

from dsifn._config import Config, settle
from dsifn._validation import check_choice
from dsifn.bands import parse_bands
from dsifn.contract import InputContract
from dsifn.errors import ConfigError
from dsifn.io.pairs import PixelReading, check_resampling
from dsifn.io.radiometry import Conversion, check_reflectance_scale
from dsifn.scaling import ScalingRule

__all__ = ["AugmentConfig", "DataConfig", "Layout", "reading_config"]

Layout = Literal[
    "auto", "dsifn", "levir", "whu", "cdd", "sysu", "s2looking", "list", "oscd", "generic"
]
# What the model learns from: digital numbers as stored, reflectance, or decided by the data.
Radiometry = Literal["auto", "dn", "reflectance"]


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} is a probability and must be in [0, 1]; got {value}")


def _check_nonnegative(name: str, value: float) -> None:
    if value < 0.0:
        raise ConfigError(f"{name} must be at least 0; got {value}")


def _check_range(name: str, value: tuple[float, float], low: float) -> None:
    if len(value) != 2 or not low < value[0] <= value[1]:
        raise ConfigError(
            f"{name} must be two numbers (min, max) with {low} < min <= max; got {value}"
        )


@dataclass(frozen=True)
class AugmentConfig(Config):
    """Random transforms applied by :class:`~dsifn.data.ChangeDetectionDataset` when training.

    Joint transforms move both dates, the mask and the valid map together, so the label stays on
    the pixels it describes. Photometric transforms change each date independently and never the
    mask: the network must learn that illumination, colour, focus and noise are not change.
    With every field at its "off" value (probabilities 0, ranges (1, 1), magnitudes 0) the
    augmentation is the identity.
    """

    # Joint: the same draw for T1, T2, mask and valid.
    hflip: float = 0.5  # probability of a left-right flip
    vflip: float = 0.5  # probability of an up-down flip
    rotate90: float = 0.5  # probability of a rotation by 90, 180 or 270 degrees (180 if not square)
    scale: tuple[float, float] = (1.0, 1.0)  # rescale factor range, drawn uniformly before the crop
    # Per date: each date draws its own values.
    brightness: float = 0.0  # gain drawn in [1 - b, 1 + b]
    contrast: float = 0.0  # contrast factor drawn in [1 - c, 1 + c], around the image mean
    hue: float = 0.0  # hue rotation drawn in [-h, h] turns (0.5 = 180 degrees); first 3 bands
    blur: float = 0.0  # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.5, 1.5)  # blur sigma range in pixels, drawn uniformly
    noise: float = 0.0  # std of additive Gaussian noise is drawn in [0, noise] (values in [0, 1])

    section: ClassVar[str] = "augment"

    def __post_init__(self) -> None:
        """Check ranges; accept lists (from YAML) for the range fields."""
        settle(self)
        for name in ("hflip", "vflip", "rotate90", "blur"):
            _check_probability(f"augment.{name}", getattr(self, name))
        for name in ("brightness", "contrast", "hue", "noise"):
            _check_nonnegative(f"augment.{name}", getattr(self, name))
        if self.brightness > 1.0 or self.contrast > 1.0:
            raise ConfigError("augment.brightness and augment.contrast must be at most 1")
        _check_range("augment.scale", self.scale, 0.0)
        _check_range("augment.blur_sigma", self.blur_sigma, 0.0)

    @classmethod
    def off(cls) -> AugmentConfig:
        """An augmentation that changes nothing."""
        return cls(hflip=0.0, vflip=0.0, rotate90=0.0)


@dataclass(frozen=True)
class DataConfig(Config):
    """Where a change-detection dataset is and how to read it.

    Digital numbers first become reflectance where ``radiometry`` says so
    (:mod:`dsifn.io.radiometry`: each file's stated scale and offset, what the layout knows,
    else Sentinel-2's DN / 10000). ``"auto"`` (the default) reads reflectance where the data
    says how (the OSCD layout; files that state a scale and offset) and no ``scale`` is given,
    and digital numbers as stored otherwise; the choice is made once per dataset, from its first
    pair, and recorded.

    Values then become [0, 1] by one of the rules of :mod:`dsifn.scaling`: by default
    (``scale`` and ``stretch`` None) 8-bit images are divided by 255 and other integer types
    by their type's maximum (uint16 by 65535), and floating-point values (reflectance) are
    taken as they are. For 12-bit or reflectance digital numbers read as stored set ``scale``
    (4095, 10000, ...) so values spread over [0, 1]; on reflectance, ``scale`` is in
    reflectance units (0.3 stretches 0-0.3 over [0, 1]). Compute the normalisation with
    ``dsifn stats``. ``stretch`` (percentiles, e.g. ``[2, 98]``) stretches each pair by the
    values of its own two dates instead. The choices are recorded in every checkpoint trained
    on the data (its input contract), so evaluation and prediction read pixels the same way.
    """

    root: str = ""  # dataset folder
    layout: Layout = "auto"  # which folder layout; "auto" detects it (see detect_layout)
    folders: tuple[str, str, str] | None = None  # generic layout: (t1, t2, mask) folder names
    bands: tuple[int, ...] | tuple[str, ...] | None = None  # 1-based numbers or names; None = all
    # digital numbers as stored ("dn"), "reflectance", or "auto" (see above)
    radiometry: Radiometry = "auto"
    offset: float | None = None  # digital numbers added first, replacing the files' offsets
    scale: float | None = None  # value that maps to 1.0; None = by dtype (see above)
    stretch: tuple[float, float] | None = None  # per-pair percentile stretch (low, high)
    ignore_value: int | None = None  # mask value meaning "not labelled": valid False there
    nodata: float | None = None  # raw image value meaning "no data", besides the files' marks
    # how band files coarser than the finest are resampled onto its grid (a rasterio name)
    resampling: str = "bilinear"
    crop_size: int | None = None  # training: random square crop of this side; None = full image
    # training crops with fewer valid pixels than this fraction are drawn again (a few times)
    crop_min_valid: float = 0.5
    # Training crops per epoch, each from an image drawn in proportion to its valid area
    # (torchgeo's RandomGeoSampler length). None: one crop per image, except for scene
    # datasets (OSCD), where it is as many crops as the train split's valid area holds.
    samples_per_epoch: int | None = None
    # OSCD: read imgs_*_rect (every band on one 10 m grid, as its authors and torchgeo do)
    # where the download has them; false: the raw band files of imgs_1 and imgs_2.
    oscd_rect: bool = True
    # A val split carved from the train split (OSCD has none; by default it holds a fifth of
    # the train cities): the pairs (cities) named, or this fraction of them, chosen by name.
    val_cities: tuple[str, ...] | None = None
    val_fraction: float | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training only

    section: ClassVar[str] = "data"

    def __post_init__(self) -> None:
        """Check values; accept lists (from YAML) and a plain dict for ``augment``."""
        settle(self)
        check_choice("data.layout", self.layout, get_args(Layout))
        if self.folders is not None and (isinstance(self.folders, str) or len(self.folders) != 3):
            raise ConfigError(
                f"data.folders must name three folders (t1, t2, mask); got {self.folders!r}"
            )
        if self.bands is not None:
            object.__setattr__(self, "bands", parse_bands(self.bands, "data.bands"))
        try:
            self.scaling_rule()
        except ConfigError as exc:
            raise ConfigError(f"data.scale / data.stretch: {exc}") from exc
        check_resampling("data.resampling", self.resampling)
        check_choice("data.radiometry", self.radiometry, get_args(Radiometry))
        check_reflectance_scale(
            self.radiometry,
            self.scale,
            "data.scale",
            "with data.radiometry=reflectance the scale is in reflectance units; leave it unset, "
            "or read digital numbers with data.radiometry=dn",
        )
        if self.crop_size is not None and self.crop_size < 1:
            raise ConfigError(f"data.crop_size must be positive; got {self.crop_size}")
        if self.samples_per_epoch is not None:
            if self.samples_per_epoch < 1:
                raise ConfigError(
                    f"data.samples_per_epoch must be positive; got {self.samples_per_epoch}"
                )
            if self.crop_size is None:
                raise ConfigError("data.samples_per_epoch draws crops: set data.crop_size")
        _check_probability("data.crop_min_valid", self.crop_min_valid)
        if self.val_cities is not None:
            if isinstance(self.val_cities, str):
                object.__setattr__(self, "val_cities", (self.val_cities,))
            cities = tuple(str(c).strip() for c in self.val_cities)
            if not cities or not all(cities):
                raise ConfigError(f"data.val_cities must name pairs; got {self.val_cities!r}")
            object.__setattr__(self, "val_cities", cities)
        if self.val_fraction is not None and not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"data.val_fraction must be in (0, 1); got {self.val_fraction}")
        if self.val_cities is not None and self.val_fraction is not None:
            raise ConfigError("give data.val_cities or data.val_fraction, not both")
        if self.layout == "generic" and self.folders is None:
            raise ConfigError("data.layout 'generic' needs data.folders: (t1, t2, mask) names")

    def scaling_rule(self) -> ScalingRule:
        """The rule ``scale`` and ``stretch`` ask for (:mod:`dsifn.scaling`)."""
        return ScalingRule.of(self.scale, self.stretch)

    def reading(self, known: Conversion | None = None) -> PixelReading:
        """How the pair reader reads this data's pixels (:mod:`dsifn.io.pairs`).

        Args:
            known: What the dataset layout knows of a pair's digital numbers (OSCD's).

        Raises:
            ConfigError: If ``radiometry`` is still ``"auto"``: decide it for the dataset
                first (:func:`dsifn.data.dataset.settle_radiometry`).
        """
        if self.radiometry == "auto":
            raise ConfigError("data.radiometry 'auto' is decided per dataset before reading")
        return PixelReading(
            self.bands,
            self.nodata,
            self.resampling,
            self.scaling_rule(),
            radiometry=self.radiometry,
            offset=self.offset,
            known=known,
        )


def reading_config(
    contract: InputContract, root: str, layout: str = "auto", *, offset: float | None = None
) -> DataConfig:
    """The data configuration that reads a dataset the way ``contract`` says."""
    rule = contract.scaling
    return DataConfig(
        root=root,
        layout=layout,  # type: ignore[arg-type]
        bands=contract.bands,
        radiometry=contract.radiometry,
        offset=offset,
        scale=rule.scale,
        stretch=rule.stretch,
        nodata=contract.nodata,
        resampling=contract.resampling,
        ignore_value=contract.ignore_value,
    )
