"""Post-training int8 quantisation of exported models, and the accuracy it costs.

Calibration tiles are read from a dataset folder through the model's input contract
(:func:`read_calibration`): its val split unless another is named (train where there is no
val), cut into tiles at the model's tile size (or a smaller image's own size). Tiles of some
pairs calibrate; tiles of other pairs, held out from calibration, measure what int8 costs
(:func:`measure_cost`): the F1 of the int8 and of the fp32 model on their labels, through the
one scoring core (:func:`dsifn.evaluation.scoring.score_batches`), the F1 of int8's change
decisions against fp32's, and the largest difference of their probabilities.
:func:`check_cost` refuses a model whose F1 drops by more than allowed.

Which pairs go to which side (:func:`split_pairs`), for every split size and tile count:

- The split's ``n`` pairs are put in one fixed shuffled order (NumPy's generator, seed 0).
- The last ``h`` pairs of that order are held out, the first ``n - h`` calibrate, where ``h``
  is the held-out share of the tiles asked for, in pairs, rounded half up:
  ``h = round(n * held_out / (pairs + held_out))``, at least 1 and at most ``n - 1``. The two
  sides never share a pair, and neither is empty.
- Each side then reads its own pairs in that order, a few evenly spaced tiles of each
  (``ceil(count / its pairs)``), until it has the tiles asked for. A side whose pairs hold
  fewer tiles keeps what they give; no tile crosses to the other side to make up the count.
- A split of one pair is refused: a cost measured on tiles of a pair that also calibrated
  would not be a held-out cost, and a model with no measured cost would pass the F1 check
  unmeasured. Name a split of two or more pairs.

The cost records how many tiles and pairs each side had and the tile shapes actually cut
(an image smaller than the tile side asked is one tile of its own size).

The quantisers are the runtimes' own: NNCF post-training quantisation for OpenVINO
(:func:`quantize_openvino_model`) and onnxruntime's static QDQ quantisation with per-channel
int8 weights and uint8 activations for ONNX (:func:`quantize_onnx_file`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dsifn._optional import require
from dsifn.contract import InputContract, is_change
from dsifn.data import ChangeDetectionDataset, detect_layout, reading_config
from dsifn.errors import ConfigError, DataError, InputError, WeightsError
from dsifn.evaluation.scoring import runner_scorer, score_batches
from dsifn.inference.pipeline import tile_side
from dsifn.inference.runner import TileRunner
from dsifn.inference.tiling import MIN_TILE, TileGrid, pad_tile
from dsifn.interop.exported import INPUT_NAMES, pad_to_multiple

__all__ = [
    "Calibration",
    "CalibrationSet",
    "QuantizationCost",
    "check_cost",
    "measure_cost",
    "quantize_onnx_file",
    "quantize_openvino_model",
    "read_calibration",
    "split_pairs",
]


@dataclass(frozen=True)
class Calibration:
    """Where the calibration tiles come from, and how much F1 int8 may cost."""

    data: str  # dataset folder (any layout dsifn reads)
    split: str | None = None  # None: the val split, else train where there is no val
    pairs: int = 64  # tiles that calibrate (at most: a side keeps what its pairs hold)
    held_out: int | None = None  # tiles, of other pairs, that measure the cost; None: pairs / 4
    tile_size: int | None = None  # None: the model's fixed size, else its training tile, else 512
    max_f1_drop: float = 1.0  # F1 points int8 may lose against fp32; more is refused
    layout: str = "auto"  # the dataset's layout; "auto" detects it

    def __post_init__(self) -> None:
        """Check the values."""
        object.__setattr__(self, "data", os.fspath(self.data))
        if self.pairs < 1:
            raise ConfigError(f"calibration pairs must be at least 1; got {self.pairs}")
        if self.held_out is not None and self.held_out < 1:
            raise ConfigError(f"calibration held_out must be at least 1; got {self.held_out}")
        if self.tile_size is not None and self.tile_size < MIN_TILE:
            raise ConfigError(
                f"calibration tile_size must be at least {MIN_TILE}; got {self.tile_size}"
            )
        if not math.isfinite(self.max_f1_drop):
            raise ConfigError(f"max_f1_drop must be a finite number; got {self.max_f1_drop}")

    @classmethod
    def of(cls, value: Calibration | str | os.PathLike[str] | None) -> Calibration:
        """A calibration, from itself or a dataset folder (with the defaults).

        Raises:
            ConfigError: If ``value`` is None: int8 needs data to calibrate on.
        """
        if value is None:
            raise ConfigError("int8 quantisation needs calibration data (`calibration=DATA`)")
        return value if isinstance(value, Calibration) else cls(data=os.fspath(value))

    @property
    def wanted_held_out(self) -> int:
        """Tiles to hold out, when the held-out pairs hold that many."""
        return self.held_out if self.held_out is not None else max(1, self.pairs // 4)


@dataclass(frozen=True)
class CalibrationSet:
    """Tiles read for quantisation: inputs to calibrate on, and held-out tiles to score.

    No pair has tiles on both sides (:func:`split_pairs`).
    """

    inputs: list[dict[str, np.ndarray]]  # {"t1", "t2"}: normalised (1, C, h, w), h, w % 16 == 0
    # Scoring batches: image (1, 2, C, h, w) in [0, 1], mask (1, 1, h, w), valid, name, pair.
    held_out: list[dict[str, Any]]
    calibration_tiles: list[str]  # the calibrating tiles' names ("PAIR@top,left"), as inputs
    calibration_pairs: list[str]  # the pairs they were cut from, in the order read
    split: str  # the split read
    tile_size: int  # side of the tiles asked for (a smaller image is one tile of its size)
    tile_shapes: list[str]  # "HxW" of the tiles actually cut (both sides), sorted
    source: Calibration  # what was asked for

    @property
    def held_out_pairs(self) -> list[str]:
        """The pairs the held-out tiles were cut from, in the order read."""
        return _pairs_of(self.held_out)


def _split_of(calibration: Calibration, splits: Sequence[str]) -> str:
    if calibration.split is not None:
        return calibration.split
    return "val" if "val" in splits or "train" not in splits else "train"


def split_pairs(count: int, calibrating: int, held_out: int) -> tuple[list[int], list[int]]:
    """Which pairs of a split calibrate and which are held out (the module docstring's rule).

    Args:
        count: Pairs in the split; at least 2.
        calibrating: Tiles asked for to calibrate.
        held_out: Tiles asked for to measure the cost.

    Returns:
        Dataset indices of the calibrating pairs and of the held-out pairs, each in the
        order they are read; disjoint, neither empty, together every pair.

    Raises:
        DataError: If ``count`` is below 2.
    """
    if count < 2:
        raise DataError(
            f"int8 needs 2 or more pairs, one to calibrate on and one held out; got {count}"
        )
    wanted = calibrating + held_out
    held = min(count - 1, max(1, (2 * count * held_out + wanted) // (2 * wanted)))
    order = [int(i) for i in np.random.default_rng(0).permutation(count)]
    return order[: count - held], order[count - held :]


def _placed(x: Tensor, height: int, width: int) -> Tensor:
    """(1, h, w) labels in the top left of a (1, 1, height, width) zero tile."""
    out = torch.zeros((1, 1, height, width), dtype=x.dtype)
    out[0, :, : x.shape[-2], : x.shape[-1]] = x
    return out


def _spread(total: int, count: int) -> list[int]:
    """``count`` of ``range(total)`` evenly spaced (all of them if there are no more)."""
    if count >= total:
        return list(range(total))
    return [int((i + 0.5) * total / count) for i in range(count)]


def _tiles(
    dataset: ChangeDetectionDataset, pairs: Sequence[int], tile: int, fixed: bool, count: int
) -> list[dict[str, Any]]:
    """Up to ``count`` tiles of the given pairs, as scoring batches, spread over them.

    The pairs are read in the order given, and from each at most ``ceil(count / len(pairs))``
    tiles of its grid (without overlap) are taken, evenly spaced. An image smaller than a tile
    is padded by mirroring, as the tile loop pads it; the padded pixels are not valid.
    """
    per_pair = max(1, math.ceil(count / len(pairs)))

    def cut() -> Iterator[dict[str, Any]]:
        for index in pairs:
            sample = dataset[index]
            height, width = sample["image"].shape[-2:]
            grid = TileGrid.plan(height, width, tile, 0, fixed=fixed)
            th, tw = grid.tile_height, grid.tile_width
            cells = list(itertools.product(grid.row_starts, grid.col_starts))
            for top, left in (cells[i] for i in _spread(len(cells), per_pair)):
                rows, cols = slice(top, top + th), slice(left, left + tw)
                image = pad_tile(sample["image"][..., rows, cols].numpy(), th, tw)
                yield {
                    "image": torch.from_numpy(np.ascontiguousarray(image))[None],
                    "mask": _placed(sample["mask"][..., rows, cols], th, tw),
                    "valid": _placed(sample["valid"][..., rows, cols], th, tw),
                    "name": f"{sample['name']}@{top},{left}",
                    "pair": str(sample["name"]),
                    "shape": f"{th}x{tw}",
                }

    return list(itertools.islice(cut(), count))


def _pairs_of(tiles: Sequence[Mapping[str, Any]]) -> list[str]:
    """The pairs tiles were cut from, once each, in order."""
    return list(dict.fromkeys(str(tile["pair"]) for tile in tiles))


def read_calibration(
    contract: InputContract, calibration: Calibration, *, fixed_size: int | None = None
) -> CalibrationSet:
    """Read calibration and held-out tiles from a dataset, as the model's contract reads data.

    The split's pairs are divided between the two sides by :func:`split_pairs`; each side cuts
    tiles without overlap from its own pairs until it has ``calibration.pairs`` (calibrating)
    or ``calibration.wanted_held_out`` (held out) tiles, or its pairs have no more.

    Args:
        contract: The model's input contract (bands, scaling, nodata, normalisation...).
        calibration: Where to read and how many tiles.
        fixed_size: The side a fixed-size model takes, else None.

    Returns:
        The tiles.

    Raises:
        DataError: If the split is missing or has fewer than two pairs.
        InputError: If the data's band count does not fit the model.
    """
    found = detect_layout(calibration.data, calibration.layout)
    split = _split_of(calibration, list(found.splits))
    dataset = ChangeDetectionDataset(
        reading_config(contract, calibration.data), split, layout=found
    )
    if dataset.bands != contract.band_count:
        raise InputError(
            f"the calibration data has {dataset.bands} band(s) per image but the model takes "
            f"{contract.band_count}"
        )
    if len(dataset) < 2:
        raise DataError(
            f"split {split} of {calibration.data} has {len(dataset)} pair(s); measuring what "
            "int8 costs needs 2 or more, one to calibrate on and one held out from it "
            "(name another `calibration.split`)"
        )
    side = tile_side(
        fixed_size, calibration.tile_size, contract.tile_size, what="calibration.tile_size"
    )
    fixed = fixed_size is not None
    calibrating, held = split_pairs(len(dataset), calibration.pairs, calibration.wanted_held_out)
    tiles = _tiles(dataset, calibrating, side, fixed, calibration.pairs)
    held_out = _tiles(dataset, held, side, fixed, calibration.wanted_held_out)
    normalize = contract.normalization
    inputs = [
        {
            name: pad_to_multiple(normalize(tile["image"][:, date]).numpy())
            for date, name in enumerate(INPUT_NAMES)
        }
        for tile in tiles
    ]
    return CalibrationSet(
        inputs=inputs,
        held_out=held_out,
        calibration_tiles=[tile["name"] for tile in tiles],
        calibration_pairs=_pairs_of(tiles),
        split=split,
        tile_size=side,
        tile_shapes=sorted({tile["shape"] for tile in (*tiles, *held_out)}),
        source=calibration,
    )


@dataclass(frozen=True)
class QuantizationCost:
    """What int8 costs against fp32 on tiles of pairs held out from calibration (F1 in points).

    Recorded in every int8 model (its metadata's ``quantization`` entry) and printed by
    ``dsifn export``.
    """

    f1_fp32: float  # F1 (0-100) of the fp32 model on the held-out tiles' labels
    f1_int8: float  # F1 of the int8 model on the same
    agreement_f1: float  # F1 of int8's change decisions scored against fp32's
    max_probability_difference: float  # largest |p_int8 - p_fp32| over the held-out pixels
    max_f1_drop: float  # the largest drop allowed
    calibration_tiles: int  # tiles that calibrated
    calibration_pairs: int  # the pairs they were cut from
    held_out_tiles: int  # tiles that measured
    held_out_pairs: int  # the pairs they were cut from (none of them calibrated)
    tile_shapes: tuple[str, ...]  # "HxW" of the tiles actually cut, e.g. ("48x48",)
    tile_size_asked: int  # the tile side asked for; smaller images are tiles of their size
    split: str  # the split they were cut from
    data: str  # the dataset folder
    threshold: float  # decision threshold of the F1 scores
    method: str  # the quantiser: "nncf" or "onnxruntime-qdq"

    @property
    def f1_drop(self) -> float:
        """F1 points lost by int8 (negative when it gained)."""
        return self.f1_fp32 - self.f1_int8

    def to_dict(self) -> dict[str, Any]:
        """Plain values for the model's metadata (``f1_drop`` included)."""
        return {**dataclasses.asdict(self), "f1_drop": self.f1_drop}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> QuantizationCost:
        """Rebuild from :meth:`to_dict`'s output (or its JSON)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in values.items() if k in names}
        kept["tile_shapes"] = tuple(kept.get("tile_shapes", ()))
        return cls(**kept)

    def tiles(self) -> str:
        """Both sides in words: held-out and calibrating tiles and pairs, and their shapes."""
        shapes = " or ".join(self.tile_shapes)
        return (
            f"{self.held_out_tiles} held-out {shapes} tile(s) of {self.held_out_pairs} pair(s) "
            f"of split {self.split} ({self.calibration_tiles} tile(s) of "
            f"{self.calibration_pairs} other pair(s) calibrated)"
        )

    def describe(self) -> str:
        """One line: the tiles, F1 of both, the drop allowed, the agreement and probability gap."""
        return (
            f"int8 against fp32 on {self.tiles()}: F1 {self.f1_fp32:.2f} -> "
            f"{self.f1_int8:.2f} (drop {self.f1_drop:.2f} points, at most "
            f"{self.max_f1_drop:g} allowed); decisions agree at F1 {self.agreement_f1:.2f}; "
            f"largest probability difference {self.max_probability_difference:.4f}"
        )


def _f1(rows: Sequence[Mapping[str, Any]], key: str, threshold: float) -> float:
    """F1 in points of the probabilities under ``key``, by the one scoring core."""
    result = score_batches(rows, lambda batch: batch[key], threshold=threshold)
    f1 = float(result.scores["f1"])
    if math.isnan(f1):
        raise DataError("the held-out calibration tiles have no labelled pixel to score")
    return 100.0 * f1


def measure_cost(
    int8: TileRunner, fp32: TileRunner, tiles: CalibrationSet, method: str
) -> QuantizationCost:
    """Score an int8 model against its fp32 original on the held-out tiles.

    Both predict as evaluation does (:func:`~dsifn.evaluation.scoring.runner_scorer`) at the
    recorded threshold of the fp32 model.

    Args:
        int8: The quantised model.
        fp32: The model it was quantised from.
        tiles: The calibration set (its held-out tiles are scored).
        method: The quantiser's name, recorded.

    Returns:
        The cost.
    """
    threshold = fp32.contract.threshold
    reference = runner_scorer(fp32, tiles.tile_size)
    candidate = runner_scorer(int8, tiles.tile_size)
    rows = []
    gap = 0.0
    for tile in tiles.held_out:
        p32, p8 = reference(tile["image"]).float(), candidate(tile["image"]).float()
        gap = max(gap, float((p32 - p8).abs().max()))
        rows.append({**tile, "fp32": p32, "int8": p8})
    agreement = [{**row, "mask": is_change(row["fp32"], threshold).float()} for row in rows]
    return QuantizationCost(
        f1_fp32=_f1(rows, "fp32", threshold),
        f1_int8=_f1(rows, "int8", threshold),
        agreement_f1=_f1(agreement, "int8", threshold),
        max_probability_difference=gap,
        max_f1_drop=tiles.source.max_f1_drop,
        calibration_tiles=len(tiles.inputs),
        calibration_pairs=len(tiles.calibration_pairs),
        held_out_tiles=len(tiles.held_out),
        held_out_pairs=len(tiles.held_out_pairs),
        tile_shapes=tuple(tiles.tile_shapes),
        tile_size_asked=tiles.tile_size,
        split=tiles.split,
        data=tiles.source.data,
        threshold=threshold,
        method=method,
    )


def check_cost(cost: QuantizationCost) -> None:
    """Refuse an int8 model that loses more F1 than allowed.

    Raises:
        WeightsError: Saying both F1 scores, the drop, the tiles and the limit.
    """
    if not cost.f1_drop <= cost.max_f1_drop:
        raise WeightsError(
            f"the int8 model loses {cost.f1_drop:.2f} F1 points against fp32 (F1 "
            f"{cost.f1_fp32:.2f} -> {cost.f1_int8:.2f} on {cost.tiles()}), more than the "
            f"{cost.max_f1_drop:g} allowed (`max_f1_drop`); nothing was written"
        )


@contextlib.contextmanager
def _quiet(name: str, level: int = logging.ERROR) -> Iterator[None]:
    """Raise a logger's level (and its handlers') for a block: the quantisers' chatter."""
    logger = logging.getLogger(name)
    before = logger.level, [h.level for h in logger.handlers]
    logger.setLevel(level)
    for handler in logger.handlers:
        handler.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(before[0])
        for handler, old in zip(logger.handlers, before[1], strict=False):
            handler.setLevel(old)


def quantize_openvino_model(model: Any, inputs: Sequence[Mapping[str, np.ndarray]]) -> Any:
    """An OpenVINO model quantised to int8 by NNCF on the calibration inputs.

    Args:
        model: An fp32 ``openvino.Model``.
        inputs: Calibration inputs (:attr:`CalibrationSet.inputs`).

    Returns:
        The int8 ``openvino.Model`` (the runtime info of ``model`` kept).
    """
    nncf = require("nncf", "openvino", "int8 quantisation with NNCF")
    with _quiet("nncf", logging.WARNING):
        return nncf.quantize(model, nncf.Dataset(list(inputs)), subset_size=len(inputs))


class _Inputs:
    """onnxruntime's calibration data reader over a list of inputs."""

    def __init__(self, inputs: Sequence[Mapping[str, np.ndarray]]) -> None:
        self._items = iter(inputs)

    def get_next(self) -> Mapping[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_onnx_file(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    inputs: Sequence[Mapping[str, np.ndarray]],
) -> None:
    """Write an ONNX model quantised by onnxruntime's static quantisation.

    The graph is first prepared as onnxruntime advises (ONNX shape inference and graph
    optimisation; its symbolic shape inference cannot follow this graph's dynamic sides), then
    quantised in QDQ format: int8 weights per output channel, uint8 activations, ranges from
    the calibration inputs' minima and maxima.

    Args:
        source: The fp32 ``.onnx`` file.
        target: The file to write (its metadata is the source's).
        inputs: Calibration inputs (:attr:`CalibrationSet.inputs`).
    """
    quantization = require("onnxruntime.quantization", "onnx", "int8 quantisation of ONNX")
    out = Path(target)
    with tempfile.TemporaryDirectory(prefix=".dsifn-int8-", dir=out.parent) as work:
        prepared = Path(work) / "prepared.onnx"
        # onnxruntime's quantiser warns on the root logger for each 1-D weight it skips.
        with _quiet(""):
            quantization.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            quantization.quantize_static(
                str(prepared),
                str(out),
                _Inputs(inputs),
                quant_format=quantization.QuantFormat.QDQ,
                per_channel=True,
                activation_type=quantization.QuantType.QUInt8,
                weight_type=quantization.QuantType.QInt8,
                calibrate_method=quantization.CalibrationMethod.MinMax,
            )
