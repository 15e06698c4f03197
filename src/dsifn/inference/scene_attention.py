"""Tiled inference that equals whole-image inference: scene-wide channel attention.

DSIFN's channel attention pools its input over the whole image (a global mean and max per
channel), so a tile's prediction depends on everything else in the tile, and plain tiling
(:func:`dsifn.inference.pipeline.run_tiles`) cannot reproduce what the network would predict for
the scene in one piece. This module can, at a cost of one extra pass over the scene per
attention stage:

1. The scene is padded at the bottom and right by reflection to multiples of 16, exactly as
   :class:`~dsifn.models.DSIFN` pads a whole image, and split into *cores* that partition it.
   Each core is predicted from a *window* around it whose margins inside the scene are at
   least the network's receptive radius (:meth:`~dsifn.models.DSIFN.receptive_radius`, 275
   pixels); along the scene's border the window stops at the padded border, where the whole
   image's zero padding lies. Window and core edges fall on multiples of 16, so every max-pool
   sees the cells it would see in the whole image.
2. For each attention stage in turn (coarsest first), every window computes that stage's
   attention input with the earlier stages' scene-wide descriptors fixed, and adds its core's
   channel sums and maxima to scene-wide totals.
3. A last pass predicts every window with all descriptors fixed and keeps its core.

With fp32 arithmetic the map equals the whole-image prediction to rounding (about 1e-6)
everywhere, borders included; the tests check this against the network run on the whole image.
With test-time augmentation each of the 8 flips and rotations of the padded scene gets its own
descriptors, as the whole padded scene flipped or rotated would. Every pass runs through the
tile loop of plain tiles (:mod:`dsifn.inference.pipeline`): windows are read ahead on reader
threads and finished rows written on a writer thread.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from dsifn.errors import ConfigError, InputError
from dsifn.inference.pipeline import DEFAULT_WINDOW, Batch, RowWriter, TileReader, normalizer
from dsifn.inference.runner import TileRunner
from dsifn.inference.tiling import apply_dihedral, axis_starts, dihedral_average, tta_transforms
from dsifn.io.pairs import ImagePair, PairData
from dsifn.models.decoder import Descriptors
from dsifn.models.padding import SIZE_MULTIPLE

__all__ = [
    "DEFAULT_WINDOW",
    "AttentionRunner",
    "WindowGrid",
    "as_attention_runner",
    "axis_windows",
    "run_scene_attention",
]

Span = tuple[int, int, int]  # (window start, core start, core end) along one axis
Window = tuple[Span, Span]  # a window's row span and column span
Transform = tuple[int, bool]  # (quarter turns, mirror) of test-time augmentation
Pooled = dict[Transform, dict[int, Descriptors]]  # scene-wide descriptors by transform, stage


@runtime_checkable
class AttentionRunner(Protocol):
    """A tile runner that can hold its channel attention's descriptors fixed.

    :class:`~dsifn.inference.runner.TorchRunner` is one; ONNX models are not.
    """

    attention_stages: tuple[int, ...]
    receptive_radius: int

    def __call__(
        self, t1: np.ndarray, t2: np.ndarray, pooled: Mapping[int, Descriptors] | None = None
    ) -> np.ndarray:
        """(B, 1, h, w) change probabilities with the given descriptors."""
        ...

    def attention_statistics(
        self,
        t1: np.ndarray,
        t2: np.ndarray,
        stage: int,
        pooled: Mapping[int, Descriptors],
        mask: np.ndarray,
    ) -> tuple[Tensor, Tensor, int]:
        """Channel sums (float64), maxima and pixel count of a stage's input inside ``mask``."""
        ...


def axis_windows(length: int, window: int, margin: int) -> list[Span]:
    """Windows and their cores along one axis of a padded scene.

    Windows of side ``window`` advance so that neighbours overlap by ``2 * margin``; the last
    one ends flush with the scene. The boundary between two cores lies on a multiple of 16 in
    the middle of their windows' overlap, so each core keeps at least ``margin - 8`` pixels of
    its window on either inner side.

    Args:
        length: Padded scene length, a multiple of 16.
        window: Window side, a multiple of 16.
        margin: Context wanted on each inner side of a core, a multiple of 16.

    Returns:
        (window start, core start, core end) triples; the cores partition [0, length).
    """
    if length <= window:
        return [(0, 0, length)]
    starts = axis_starts(length, window, 2 * margin)
    bounds = [0]
    for before, after in itertools.pairwise(starts):
        middle = (after + before + window) // 2
        bounds.append(middle - middle % SIZE_MULTIPLE)
    bounds.append(length)
    return [(s, bounds[i], bounds[i + 1]) for i, s in enumerate(starts)]


@dataclass(frozen=True)
class WindowGrid:
    """Windows covering a scene padded to multiples of 16, with the cores they predict."""

    height: int  # scene rows
    width: int  # scene columns
    padded_height: int  # rows after padding to a multiple of 16
    padded_width: int  # columns after padding to a multiple of 16
    window_height: int  # rows of every window
    window_width: int  # columns of every window
    margin: int  # context kept around each core inside the scene
    rows: tuple[Span, ...]  # (window start, core start, core end) of each window row
    cols: tuple[Span, ...]  # the same for each window column

    @classmethod
    def plan(cls, height: int, width: int, window: int, radius: int) -> WindowGrid:
        """Plan windows of side ``window`` for a receptive radius of ``radius`` pixels.

        Raises:
            ConfigError: If the window is not a multiple of 16 or leaves no core.
            InputError: If a scene side is below 16 pixels.
        """
        if min(height, width) < SIZE_MULTIPLE:
            raise InputError(
                f"scene-wide attention needs scene sides of at least 16; got {height}x{width}"
            )
        # Cores keep at least margin - 8 pixels of context (see axis_windows).
        margin = -(-(radius + SIZE_MULTIPLE // 2) // SIZE_MULTIPLE) * SIZE_MULTIPLE
        smallest = 2 * margin + SIZE_MULTIPLE
        if window % SIZE_MULTIPLE or window < smallest:
            raise ConfigError(
                f"with scene-wide attention the tile size must be a multiple of 16 and at "
                f"least {smallest} (two {margin}-pixel margins and a core); got {window}"
            )
        ph = height + -height % SIZE_MULTIPLE
        pw = width + -width % SIZE_MULTIPLE
        return cls(
            height=height,
            width=width,
            padded_height=ph,
            padded_width=pw,
            window_height=min(window, ph),
            window_width=min(window, pw),
            margin=margin,
            rows=tuple(axis_windows(ph, window, margin)),
            cols=tuple(axis_windows(pw, window, margin)),
        )

    def __len__(self) -> int:
        return len(self.rows) * len(self.cols)

    def core_mask(self, row: Span, col: Span) -> np.ndarray:
        """The window's core as a bool (window_height, window_width) array."""
        mask = np.zeros((self.window_height, self.window_width), dtype=bool)
        mask[row[1] - row[0] : row[2] - row[0], col[1] - col[0] : col[2] - col[0]] = True
        return mask


def read_window(pair: ImagePair, grid: WindowGrid, row: int, col: int) -> PairData:
    """A window of both dates: scaled, 0 where either has no data, padded by reflection.

    Past the scene's bottom and right the values mirror the scene as ``torch`` ``"reflect"``
    padding does (without repeating the edge pixel), which is what the whole image gets.
    """
    window = pair.read(row, col, grid.window_height, grid.window_width)
    h, w = window.valid.shape
    pad = ((0, grid.window_height - h), (0, grid.window_width - w))
    if not any(p[1] for p in pad):
        return window
    values = np.pad(window.values, ((0, 0), (0, 0), *pad), mode="reflect")
    return PairData(values, np.pad(window.valid, pad, mode="reflect"), window.scaling)


def _batches(grid: WindowGrid, size: int) -> Iterator[list[Window]]:
    # Every window, row by row, in batches that never cross a row.
    for row in grid.rows:
        for i in range(0, len(grid.cols), size):
            yield [(row, col) for col in grid.cols[i : i + size]]


def run_scene_attention(
    runner: TileRunner,
    pair: ImagePair,
    grid: WindowGrid,
    write_rows: Callable[[int, np.ndarray], None],
    *,
    batch_size: int = 1,
    tta: bool = False,
    progress: bool = True,
    readers: int | None = None,
) -> Pooled:
    """Predict a scene exactly as the network would predict it whole, window by window.

    Args:
        runner: The model, able to fix its attention descriptors (:func:`as_attention_runner`).
        pair: Both dates, open.
        grid: Windows and cores (:meth:`WindowGrid.plan` with the runner's receptive radius).
        write_rows: Called as ``write_rows(first_row, values)`` with float32 (n, width)
            probabilities, NaN where either date is invalid, rows in increasing order.
        batch_size: Windows per runner call.
        tta: Average the 8 flips and rotations, each with its own scene-wide descriptors.
        progress: Show a progress bar over windows and passes.
        readers: Threads reading windows ahead of the model; None:
            :data:`~dsifn.inference.pipeline.READERS`.

    Returns:
        The scene-wide descriptors used, by transform and then by stage.
    """
    from dsifn.progress import progress_bar

    attention = as_attention_runner(runner)
    _check_margin(attention, grid)
    pooled: Pooled = {t: {} for t in tta_transforms(tta)}
    passes = len(attention.attention_stages) + 1

    def read(pair: ImagePair, window: Window) -> PairData:
        return read_window(pair, grid, window[0][0], window[1][0])

    with (
        TileReader(pair, read, normalizer(runner), readers) as reader,
        progress_bar(len(grid) * passes, "dsifn predict", "window", enabled=progress) as bar,
    ):
        _pool_stages(attention, reader, grid, pooled, batch_size, bar)
        bar.set_description("dsifn predict: change map")
        with RowWriter(write_rows) as writer:
            for rows in _core_rows(attention, reader, grid, pooled, batch_size, bar):
                writer.put([rows])
    return pooled


def as_attention_runner(runner: TileRunner) -> AttentionRunner:
    """``runner`` as a model whose channel attention can be fixed, or a clear refusal.

    Raises:
        ConfigError: If the runner cannot fix its attention descriptors, or takes one tile size
            only (it has no whole-scene prediction to match).
    """
    name = getattr(runner, "model_name", "dsifn")
    if name != "dsifn":
        raise ConfigError(
            f"scene-wide attention holds DSIFN's channel attention fixed, and a {name} model "
            'has none (nor any other scene-wide operation): use `attention="tile"`'
        )
    if not isinstance(runner, AttentionRunner):
        raise ConfigError(
            "scene-wide attention needs a model that can fix its channel attention: use the "
            "torch runtime with a dsifn checkpoint"
        )
    if runner.tile_size is not None:
        raise ConfigError(
            f"this model takes {runner.tile_size}x{runner.tile_size} tiles only, so it has no "
            'whole-scene prediction to match: use `attention="tile"`'
        )
    return runner


def _check_margin(runner: AttentionRunner, grid: WindowGrid) -> None:
    if grid.margin - SIZE_MULTIPLE // 2 < runner.receptive_radius:
        raise ConfigError(
            f"window margin {grid.margin} is too narrow for the model's receptive radius "
            f"{runner.receptive_radius}"
        )


def _pool_stages(
    runner: AttentionRunner,
    reader: TileReader[Window],
    grid: WindowGrid,
    pooled: Pooled,
    batch_size: int,
    bar: Any,
) -> None:
    # One pass per attention stage, coarsest first, each with the earlier stages' descriptors
    # fixed: fills ``pooled`` stage by stage.
    stages = runner.attention_stages
    for number, stage in enumerate(stages, start=1):
        bar.set_description(f"dsifn predict: attention {number}/{len(stages)}")
        found = _stage_descriptors(runner, reader, grid, stage, pooled, batch_size, bar)
        for t, descriptors in found.items():
            pooled[t][stage] = descriptors


def _stage_descriptors(
    runner: AttentionRunner,
    reader: TileReader[Window],
    grid: WindowGrid,
    stage: int,
    pooled: Pooled,
    batch_size: int,
    bar: Any,
) -> dict[Transform, Descriptors]:
    # One pass over the scene: the stage's scene-wide (mean, max) per transform, each window
    # adding its core's channel sums and maxima.
    sums: dict[Transform, Tensor] = {}
    peaks: dict[Transform, Tensor] = {}
    counts = dict.fromkeys(pooled, 0)
    for batch, (a, b, _) in reader.read(_batches(grid, batch_size)):
        masks = np.stack([grid.core_mask(row, col) for row, col in batch])
        for t in pooled:
            total, peak, count = runner.attention_statistics(
                apply_dihedral(a, *t),
                apply_dihedral(b, *t),
                stage,
                pooled[t],
                apply_dihedral(masks, *t),
            )
            sums[t] = total if t not in sums else sums[t] + total
            peaks[t] = peak if t not in peaks else torch.maximum(peaks[t], peak)
            counts[t] += count
        bar.update(len(batch))
    return {t: ((sums[t] / counts[t]).float(), peaks[t]) for t in pooled}


def _core_rows(
    runner: AttentionRunner,
    reader: TileReader[Window],
    grid: WindowGrid,
    pooled: Pooled,
    batch_size: int,
    bar: Any,
) -> Iterator[tuple[int, np.ndarray]]:
    # The last pass: each window row's cores as (first scene row, float32 (n, width)), in
    # order, NaN where either date has no data.
    strip = np.zeros((0, grid.padded_width), dtype=np.float32)
    current: Span | None = None
    for batch, tiles in reader.read(_batches(grid, batch_size)):
        row = batch[0][0]
        if row != current:
            if current is not None:
                yield _scene_rows(grid, current, strip)
            current = row
            strip = np.zeros((row[2] - row[1], grid.padded_width), dtype=np.float32)
        probability = _predict_windows(runner, tiles, pooled)
        for (_, col), p in zip(batch, probability, strict=True):
            core = p[row[1] - row[0] : row[2] - row[0], col[1] - col[0] : col[2] - col[0]]
            strip[:, col[1] : col[2]] = core
        bar.update(len(batch))
    if current is not None:
        yield _scene_rows(grid, current, strip)


def _predict_windows(runner: AttentionRunner, tiles: Batch, pooled: Pooled) -> np.ndarray:
    # (B, h, w) probabilities of a batch of windows with the scene-wide descriptors, NaN
    # where either date has no data.
    probability = dihedral_average(
        lambda x1, x2, t: runner(x1, x2, pooled[t]), tiles.t1, tiles.t2, tuple(pooled)
    )
    probability[~tiles.valid] = np.nan
    return probability


def _scene_rows(grid: WindowGrid, row: Span, strip: np.ndarray) -> tuple[int, np.ndarray]:
    # A window row's cores inside the scene. Every core starts inside the scene: the padding
    # is under 16 rows, cores are more.
    first = row[1]
    return first, strip[: min(row[2], grid.height) - first, : grid.width]
