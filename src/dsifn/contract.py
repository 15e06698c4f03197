"""The input contract: how pixels became model input, recorded once with the model.

Training writes an :class:`InputContract` into every checkpoint (``meta["input_contract"]``),
and every export carries it in its metadata. It says how a file's pixels became the tensors the
network learnt from: which bands, whether digital numbers were first converted to reflectance
(:mod:`dsifn.io.radiometry`), which scaling rule (:mod:`dsifn.scaling`) and its values,
which raw value is nodata and which label value is ignored, the normalisation, the band count,
the tile size it trained on, and the decision threshold with its rule.

Evaluation and prediction read pixels the way the contract says unless told otherwise;
:meth:`InputContract.override` applies an option that differs and returns the one-line notice
that says so. A checkpoint written before contracts existed gets one derived from its
recorded training configuration (or the defaults), with a notice; a contract written before
``radiometry`` existed records digital numbers read as stored, which is what those models
learnt from.

The decision rule is the same everywhere (:func:`is_change`): a pixel is change when its
probability is strictly greater than the threshold, ``p > t``.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from dsifn._validation import check_choice
from dsifn.bands import parse_bands
from dsifn.errors import ConfigError, InputError
from dsifn.io.pairs import PixelReading, check_resampling
from dsifn.io.radiometry import UNITS, Unit, check_reflectance_scale
from dsifn.normalization import Normalization
from dsifn.scaling import ScalingRule

if TYPE_CHECKING:
    import torch

__all__ = [
    "CONTRACT_KEY",
    "DEFAULT_THRESHOLD",
    "THRESHOLD_RULE",
    "InputContract",
    "check_threshold",
    "is_change",
    "notify",
    "say",
]

# Where the contract lives in a checkpoint's meta and in an export's metadata.
CONTRACT_KEY = "input_contract"
# 2: records `radiometry` (a contract of version 1 read digital numbers as stored).
CONTRACT_VERSION = 2
# Decision threshold when a model records none: the midpoint of the sigmoid.
DEFAULT_THRESHOLD = 0.5
# The one decision rule: change where the probability is strictly above the threshold.
THRESHOLD_RULE = "p > t"

A = TypeVar("A", np.ndarray, "torch.Tensor")


def is_change(probability: A, threshold: float) -> A:
    """The decision rule, for NumPy arrays and tensors alike: ``probability > threshold``.

    Compared in float64, so that a float32 probability and a threshold such as 0.3 (not a
    float32 number) give the same answer in every output and in the metrics. NaN (no data) is
    never change.

    Returns:
        A bool array (or tensor) of the probability's shape.
    """
    if isinstance(probability, np.ndarray):
        return probability.astype(np.float64, copy=False) > threshold
    return probability.double() > threshold


def check_threshold(value: Any, source: str = "threshold") -> float:
    """A decision threshold as a float in [0, 1], or a one-line error naming ``source``.

    Raises:
        ConfigError: If the value is not a number in [0, 1] (NaN included).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be a number in [0, 1]; got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{source} must be in [0, 1]; got {value!r}")
    return number


def notify(text: str) -> None:
    """Say one line on standard error (overrides of the contract, missing contracts)."""
    print(f"dsifn: {text}", file=sys.stderr)


def say(lines: list[str], said: set[str] | None = None) -> None:
    """Say each line once (:func:`notify`), skipping those in ``said``, which is updated."""
    said = set() if said is None else said
    for line in lines:
        if line not in said:
            said.add(line)
            notify(line)


@dataclass(frozen=True)
class InputContract:
    """How a model's input was made from image files (see the module docstring)."""

    band_count: int  # bands per date the model takes
    normalization: Normalization  # applied to the [0, 1] images
    # 1-based bands of each date's stack, or band names picking band files; None: all.
    bands: tuple[int, ...] | tuple[str, ...] | None = None
    # Digital numbers as stored ("dn"), or converted to reflectance first with what each file
    # states (its scale and offset) before the scaling ("reflectance").
    radiometry: Unit = "dn"
    scaling: ScalingRule = field(default_factory=ScalingRule)  # values to [0, 1]
    nodata: float | None = None  # raw value meaning no data; None: the files' own marks
    # How band files of other resolutions are put on the finest grid (a rasterio resampling).
    resampling: str = "bilinear"
    ignore_value: int | None = None  # label value meaning "not labelled"
    tile_size: int | None = None  # side of the crops it trained on; None: whole images
    threshold: float = DEFAULT_THRESHOLD  # change where p > threshold
    threshold_rule: str = THRESHOLD_RULE
    # Where it came from: "recorded", "training config" (older checkpoint), "defaults".
    origin: str = field(default="recorded", compare=False)

    def __post_init__(self) -> None:
        """Check the values (a contract read from a file is checked like one made here)."""
        if self.bands is not None:
            object.__setattr__(self, "bands", parse_bands(self.bands, "contract bands"))
            if len(self.bands) != self.band_count:
                raise ConfigError(
                    f"the contract selects {len(self.bands)} band(s) for a model of "
                    f"{self.band_count}"
                )
        if self.normalization.bands != self.band_count:
            raise ConfigError("the contract's normalisation does not fit its band count")
        object.__setattr__(self, "threshold", check_threshold(self.threshold))
        check_resampling("the contract's resampling", self.resampling)
        check_choice("the contract's radiometry", self.radiometry, UNITS)
        check_reflectance_scale(
            self.radiometry,
            self.scaling.scale,
            "scale",
            "the model reads reflectance, so the scale is in reflectance units; leave it unset",
        )
        if self.threshold_rule != THRESHOLD_RULE:
            raise ConfigError(f"unknown threshold rule {self.threshold_rule!r}")
        if self.nodata is not None and math.isinf(float(self.nodata)):
            raise ConfigError(f"nodata must be a finite value or NaN; got {self.nodata}")

    @classmethod
    def for_training(cls, data: Any, model: Any, threshold: float) -> InputContract:
        """The contract of a model of ``model`` config trained on ``data`` (a DataConfig).

        ``data.radiometry`` must be decided for the dataset (not ``"auto"``).
        """
        return cls(
            band_count=model.in_channels,
            normalization=model.input_normalization,
            bands=data.bands,
            radiometry=data.radiometry,
            scaling=data.scaling_rule(),
            nodata=data.nodata,
            resampling=data.resampling,
            ignore_value=data.ignore_value,
            tile_size=data.crop_size or model.input_size,
            threshold=threshold,
        )

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], model: Any) -> InputContract:
        """The contract a checkpoint's (or export's) ``meta`` records, for a model config.

        Older checkpoints record none: the reading of their training configuration is used
        (``origin="training config"``), else the defaults (``origin="defaults"``). The
        threshold lives in the contract; checkpoints of dsifn 0.2 also kept a copy in
        ``meta["threshold"]``, which wins when present, as those versions read it.

        Raises:
            ConfigError: If the recorded contract is malformed.
        """
        threshold = meta.get("threshold", DEFAULT_THRESHOLD)
        recorded = meta.get(CONTRACT_KEY)
        if recorded is not None:
            if not isinstance(recorded, Mapping):
                raise ConfigError(f"the input contract is not a mapping: {recorded!r}")
            contract = cls.from_dict(recorded)
            return contract.replace(threshold=threshold) if "threshold" in meta else contract
        training = meta.get("training")
        data = training.get("data") if isinstance(training, Mapping) else None
        base = cls(model.in_channels, model.input_normalization, threshold=threshold)
        if not isinstance(data, Mapping):
            return base.replace(tile_size=model.input_size, origin="defaults")
        return base.replace(
            bands=data.get("bands"),
            scaling=ScalingRule.of(data.get("scale"), data.get("stretch")),
            nodata=data.get("nodata"),
            ignore_value=data.get("ignore_value"),
            tile_size=data.get("crop_size") or model.input_size,
            origin="training config",
        )

    def reading(self) -> PixelReading:
        """How the pair reader reads pixels for this model (:mod:`dsifn.io.pairs`)."""
        return PixelReading(
            self.bands, self.nodata, self.resampling, self.scaling, radiometry=self.radiometry
        )

    @classmethod
    def of(cls, model: Any) -> InputContract:
        """The contract a loaded model records (``model.checkpoint_meta``, its config)."""
        return cls.from_meta(model.checkpoint_meta, model.config)

    def replace(self, **changes: Any) -> InputContract:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain values for checkpoints and model metadata."""
        norm = self.normalization
        return {
            "version": CONTRACT_VERSION,
            "band_count": self.band_count,
            "bands": None if self.bands is None else list(self.bands),
            "radiometry": self.radiometry,
            "scaling": self.scaling.to_dict(),
            "nodata": self.nodata,
            "resampling": self.resampling,
            "ignore_value": self.ignore_value,
            "normalization": {
                "mean": list(norm.mean),
                "std": list(norm.std),
                "scale": norm.scale,
                "reverse_bands": norm.reverse_bands,
            },
            "tile_size": self.tile_size,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> InputContract:
        """Rebuild from :meth:`to_dict`'s output.

        Raises:
            ConfigError: If a field is missing or of the wrong kind.
        """
        try:
            norm = values["normalization"]
            return cls(
                band_count=int(values["band_count"]),
                normalization=Normalization(
                    tuple(norm["mean"]),
                    tuple(norm["std"]),
                    float(norm["scale"]),
                    bool(norm["reverse_bands"]),
                ),
                bands=values.get("bands"),
                radiometry=values.get("radiometry", "dn"),
                scaling=ScalingRule.from_dict(values.get("scaling") or {}),
                nodata=None if values.get("nodata") is None else float(values["nodata"]),
                resampling=str(values.get("resampling", "bilinear")),
                ignore_value=values.get("ignore_value"),
                tile_size=values.get("tile_size"),
                threshold=values.get("threshold", DEFAULT_THRESHOLD),
                threshold_rule=values.get("threshold_rule", THRESHOLD_RULE),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"the input contract is malformed: {exc!r}") from exc

    def describe(self) -> str:
        """One line: bands, scaling, nodata, tile size, threshold."""
        bands = "all bands" if self.bands is None else "bands " + ",".join(map(str, self.bands))
        parts = [bands, self.scaling.describe()]
        if self.radiometry == "reflectance":
            parts.insert(1, "reflectance")
        if self.nodata is not None:
            parts.append(f"nodata {self.nodata:g}")
        if self.tile_size is not None:
            parts.append(f"{self.tile_size}-pixel tiles")
        parts.append(f"change where p > {self.threshold:g}")
        return ", ".join(parts)

    def notice(self, source: str) -> str | None:
        """The one-line notice of a contract that was not recorded, or None."""
        if self.origin == "recorded":
            return None
        how = "its training configuration" if self.origin == "training config" else "the defaults"
        return (
            f"{source} records no input contract (written before dsifn 0.2); reading pixels "
            f"as {how} say: {self.describe()}"
        )

    def resolve(self, source: str, **options: Any) -> InputContract:
        """:meth:`resolved` with its notices said on stderr at once (:func:`say`).

        Args:
            source: The model file, for the notice of a missing contract.
            **options: As :meth:`override`.

        Returns:
            The contract to use.
        """
        contract, lines = self.resolved(source, **options)
        say(lines)
        return contract

    def resolved(self, source: str, **options: Any) -> tuple[InputContract, list[str]]:
        """:meth:`override`, with :meth:`notice`'s line first; nothing is said yet.

        Returns:
            The contract to use and the lines to say once the work is sure to start.
        """
        contract, notices = self.override(**options)
        return contract, [line for line in [self.notice(source), *notices] if line is not None]

    def override(self, **options: Any) -> tuple[InputContract, list[str]]:
        """Apply options that replace recorded values; None means "as recorded".

        Args:
            **options: ``bands``, ``scale``, ``stretch``, ``nodata``, ``threshold`` and
                ``tile_size``.

        Returns:
            The contract to use and one notice per recorded value replaced.
        """
        changes: dict[str, Any] = {}
        notices: list[str] = []
        bands, scale = options.pop("bands", None), options.pop("scale", None)
        stretch = options.pop("stretch", None)
        if bands is not None:
            changes["bands"] = parse_bands(bands)
            if len(changes["bands"]) != self.band_count:
                raise InputError(
                    f"the model takes {self.band_count} band(s) per date; bands "
                    f"{','.join(map(str, changes['bands']))} select {len(changes['bands'])}"
                )
        if scale is not None or stretch is not None:
            changes["scaling"] = ScalingRule.of(scale, stretch)
        for name in ("nodata", "threshold", "tile_size"):
            value = options.pop(name, None)
            if value is not None:
                changes[name] = check_threshold(value) if name == "threshold" else value
        if options:
            raise TypeError(f"unknown contract option(s): {', '.join(sorted(options))}")
        for name, value in changes.items():
            old = getattr(self, name)
            # A tile size is worth a word only against a recorded one (not whole images).
            quiet = self.origin == "defaults" or (name == "tile_size" and old is None)
            if value != old and not quiet:
                notices.append(f"using {_show(name, value)} as asked; {_trained(name, old)}")
        return self.replace(**changes), notices


def _show(name: str, value: Any) -> str:
    if name == "scaling":
        return str(value.describe())
    if name == "bands":
        return "bands " + ",".join(map(str, value))
    if name == "tile_size":
        return f"{value}-pixel tiles"
    return f"{name.replace('_', ' ')} {value:g}"


def _trained(name: str, old: Any) -> str:
    if name == "threshold":
        return f"the model records threshold {old:g}"
    if old is None:
        what = {"bands": "all bands", "nodata": "the files' nodata"}
        return f"the model was trained with {what[name]}"
    return f"the model was trained with {_show(name, old)}"
