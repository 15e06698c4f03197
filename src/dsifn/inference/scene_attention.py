"""Tiled inference that equals whole-image inference: scene-wide channel attention.

DSIFN's channel attention pools its input over the whole image (a global mean and max per
channel), so a tile's prediction depends on everything else in the tile, and plain tiling
(:func:`dsifn.inference.scene.run_tiles`) cannot reproduce what the network would predict for
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
descriptors, as the whole padded scene flipped or rotated would.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from dsifn.errors import ConfigError, InputError
from dsifn.inference.scaling import Scaling
from dsifn.inference.sources import SceneSource, both_valid, read_scaled
from dsifn.inference.tiling import apply_dihedral, axis_starts, dihedral_average, tta_transforms
from dsifn.models.dsifn import SIZE_MULTIPLE, Descriptors

__all__ = [
    "DEFAULT_WINDOW",
    "AttentionRunner",
    "WindowGrid",
    "axis_windows",
    "run_scene_attention",
]

Span = tuple[int, int, int]  # (window start, core start, core end) along one axis

# Default window side: 1024 keeps a core of 448 pixels inside the 288-pixel margins.
DEFAULT_WINDOW = 1024


@runtime_checkable
class AttentionRunner(Protocol):
    """A tile runner that can hold its channel attention's descriptors fixed.

    :class:`~dsifn.inference.runner.TorchRunner` is one; ONNX models are not.
    """

    in_channels: int
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


def read_window(
    source: SceneSource, grid: WindowGrid, row: int, col: int, scaling: Scaling
) -> np.ndarray:
    """(C, window_height, window_width) scaled window; invalid pixels 0, padded by reflection.

    Past the scene's bottom and right the values mirror the scene as ``torch`` ``"reflect"``
    padding does (without repeating the edge pixel), which is what the whole image gets.
    """
    h = min(grid.window_height, grid.height - row)
    w = min(grid.window_width, grid.width - col)
    values = read_scaled(source, row, col, h, w, scaling)
    pad = ((0, 0), (0, grid.window_height - h), (0, grid.window_width - w))
    return np.pad(values, pad, mode="reflect") if any(p[1] for p in pad) else values


def _batches(
    grid: WindowGrid, rows: Sequence[Span], size: int
) -> Iterator[list[tuple[Span, Span]]]:
    # Windows of the given window rows, in batches that never cross a row.
    for row in rows:
        for i in range(0, len(grid.cols), size):
            yield [(row, col) for col in grid.cols[i : i + size]]


def run_scene_attention(
    runner: AttentionRunner,
    t1: SceneSource,
    t2: SceneSource,
    grid: WindowGrid,
    scaling: Scaling,
    normalize: Callable[[Sequence[np.ndarray]], np.ndarray],
    write_rows: Callable[[int, np.ndarray], None],
    *,
    batch_size: int = 1,
    tta: bool = False,
    progress: bool = True,
) -> dict[tuple[int, bool], dict[int, Descriptors]]:
    """Predict a scene exactly as the network would predict it whole, window by window.

    Args:
        runner: The model, able to fix its attention descriptors.
        t1: First date.
        t2: Second date, on the same grid.
        grid: Windows and cores (:meth:`WindowGrid.plan` with the runner's receptive radius).
        scaling: Raw values to [0, 1].
        normalize: Stacks scaled windows into a normalised float32 (B, C, h, w) batch.
        write_rows: Called as ``write_rows(first_row, values)`` with float32 (n, width)
            probabilities, NaN where either date is invalid, rows in increasing order.
        batch_size: Windows per runner call.
        tta: Average the 8 flips and rotations, each with its own scene-wide descriptors.
        progress: Show a progress bar over windows and passes.

    Returns:
        The scene-wide descriptors used, by transform and then by stage.
    """
    from tqdm.auto import tqdm

    if grid.margin - SIZE_MULTIPLE // 2 < runner.receptive_radius:
        raise ConfigError(
            f"window margin {grid.margin} is too narrow for the model's receptive radius "
            f"{runner.receptive_radius}"
        )
    transforms = tta_transforms(tta)
    pooled: dict[tuple[int, bool], dict[int, Descriptors]] = {t: {} for t in transforms}
    stages = runner.attention_stages
    passes = len(stages) + 1

    def inputs(batch: list[tuple[Span, Span]]) -> tuple[np.ndarray, np.ndarray]:
        a = [read_window(t1, grid, row[0], col[0], scaling) for row, col in batch]
        b = [read_window(t2, grid, row[0], col[0], scaling) for row, col in batch]
        return normalize(a), normalize(b)

    with tqdm(
        total=len(grid) * passes, unit="window", disable=not progress, desc="dsifn predict"
    ) as bar:
        for number, stage in enumerate(stages, start=1):
            bar.set_description(f"dsifn predict: attention {number}/{len(stages)}")
            sums: dict[tuple[int, bool], Tensor] = {}
            peaks: dict[tuple[int, bool], Tensor] = {}
            counts = dict.fromkeys(transforms, 0)
            for batch in _batches(grid, grid.rows, batch_size):
                a, b = inputs(batch)
                masks = np.stack([grid.core_mask(row, col) for row, col in batch])
                for t in transforms:
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
            for t in transforms:
                pooled[t][stage] = ((sums[t] / counts[t]).float(), peaks[t])
        bar.set_description("dsifn predict: change map")
        for row in grid.rows:
            strip = np.zeros((row[2] - row[1], grid.padded_width), dtype=np.float32)
            for batch in _batches(grid, [row], batch_size):
                a, b = inputs(batch)
                probability = dihedral_average(
                    lambda x1, x2, t: runner(x1, x2, pooled[t]), a, b, transforms
                )
                for (_, col), p in zip(batch, probability, strict=True):
                    core = p[row[1] - row[0] : row[2] - row[0], col[1] - col[0] : col[2] - col[0]]
                    strip[:, col[1] : col[2]] = core
                bar.update(len(batch))
            # Every core starts inside the scene: the padding is under 16 rows, cores are more.
            first, n = row[1], min(row[2], grid.height) - row[1]
            values = strip[:n, : grid.width]
            values[~both_valid(t1, t2, first, n)] = np.nan
            write_rows(first, values)
    return pooled
