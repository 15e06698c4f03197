"""Tiling arithmetic and seamless blending, as pure functions on arrays (no files).

A scene is covered by a grid of overlapping tiles; the last tile of each row and column sits
flush with the scene's edge, so every tile is whole and no pixel is predicted from padding
unless the scene is smaller than one tile. Overlapping predictions are blended with a
separable weight that is zero in a thin margin along each tile edge that lies inside the scene
(where a tile lacks context), rises as a raised cosine across the rest of the overlap and is one
elsewhere and along the scene's own border. The two rising and falling ramps of neighbouring
tiles sum to one, and the blend divides by the accumulated weight, so a model whose output
depends only on a neighbourhood no wider than the margin gives exactly its whole-image output.

The blending accumulator covers one strip of tile rows only (:class:`StripBlender`): finished
rows are handed out as soon as no later tile touches them, so memory is bounded by the scene's
width times the tile height, whatever the scene's height. Each tile brings the validity read
with its values, and finished rows come out NaN where either date has no data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from dsifn.errors import ConfigError

__all__ = [
    "DIHEDRAL",
    "MIN_TILE",
    "StripBlender",
    "TileGrid",
    "apply_dihedral",
    "axis_starts",
    "axis_weights",
    "dihedral_average",
    "invert_dihedral",
    "pad_tile",
    "tta_transforms",
]

# The network halves its input four times; smaller tiles are padded up to this.
MIN_TILE = 16


def axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``length`` pixels along one axis.

    Tiles advance by ``tile - overlap``; the last one is moved back to end flush with the edge
    (it then overlaps its neighbour by more than ``overlap``). A length not above ``tile``
    gives one tile at 0.

    Args:
        length: Pixels along the axis (>= 1).
        tile: Tile side (>= 1).
        overlap: Pixels shared by neighbouring tiles, ``0 <= overlap < tile``.

    Returns:
        Increasing start offsets.
    """
    if length < 1 or tile < 1:
        raise ConfigError(f"length and tile must be positive; got {length} and {tile}")
    if not 0 <= overlap < tile:
        raise ConfigError(f"overlap must be in [0, tile size {tile}); got {overlap}")
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


def axis_weights(start: int, tile: int, length: int, overlap: int) -> np.ndarray:
    """Blending weights along one axis of one tile.

    An edge inside the scene gets zero weight over ``overlap // 4`` pixels, then a raised
    cosine ramp to one over the rest of the overlap; an edge on the scene's border keeps weight
    one. Mirrored ramps of neighbours sum to one.

    Args:
        start: The tile's start offset along the axis.
        tile: Tile side.
        length: Scene length along the axis.
        overlap: Nominal overlap between neighbouring tiles.

    Returns:
        float64 (tile,) weights in [0, 1].
    """
    weights = np.ones(tile, dtype=np.float64)
    if overlap <= 0:
        return weights
    margin = overlap // 4
    ramp_len = overlap - 2 * margin
    d = np.arange(tile, dtype=np.float64)
    # sin^2 ramp over [margin, overlap - margin): w(d) + w(overlap - 1 - d) = 1.
    t = np.clip((d - margin + 0.5) / ramp_len, 0.0, 1.0)
    ramp = np.sin(0.5 * math.pi * t) ** 2
    if start > 0:
        weights *= ramp
    if start + tile < length:
        weights *= ramp[::-1]
    return weights


@dataclass(frozen=True)
class TileGrid:
    """Tiles covering a ``height`` x ``width`` scene.

    Build with :meth:`plan`. Tiles are ``tile_height`` x ``tile_width``; where the scene is
    smaller than a tile, the tile extends past the scene and the input is padded.
    """

    height: int  # scene rows
    width: int  # scene columns
    tile_height: int  # rows of every tile
    tile_width: int  # columns of every tile
    overlap: int  # nominal pixels shared by neighbouring tiles
    row_starts: tuple[int, ...]  # first row of each tile row, increasing
    col_starts: tuple[int, ...]  # first column of each tile column, increasing

    @classmethod
    def plan(
        cls, height: int, width: int, tile_size: int, overlap: int, *, fixed: bool = False
    ) -> TileGrid:
        """Plan the tiles of a scene.

        Args:
            height: Scene rows.
            width: Scene columns.
            tile_size: Tile side.
            overlap: Overlap between neighbours; at most half the tile side.
            fixed: The model takes only ``tile_size`` tiles; otherwise tiles shrink to a scene
                smaller than a tile (not below :data:`MIN_TILE`).

        Returns:
            The grid.
        """
        if tile_size < MIN_TILE:
            raise ConfigError(f"tile size must be at least {MIN_TILE}; got {tile_size}")
        if not 0 <= 2 * overlap <= tile_size:
            raise ConfigError(
                f"overlap must be between 0 and half the tile size ({tile_size // 2}); "
                f"got {overlap}"
            )
        if height < 1 or width < 1:
            raise ConfigError(f"scene must have at least one pixel; got {height}x{width}")

        def side(length: int) -> int:
            return tile_size if fixed else max(min(tile_size, length), MIN_TILE)

        th, tw = side(height), side(width)
        return cls(
            height=height,
            width=width,
            tile_height=th,
            tile_width=tw,
            overlap=overlap,
            row_starts=tuple(axis_starts(height, th, min(overlap, th - 1))),
            col_starts=tuple(axis_starts(width, tw, min(overlap, tw - 1))),
        )

    def __len__(self) -> int:
        return len(self.row_starts) * len(self.col_starts)

    def weights(self, row: int, col: int) -> np.ndarray:
        """float32 (tile_height, tile_width) blending weights of the tile at (row, col)."""
        wy = axis_weights(row, self.tile_height, self.height, self.overlap)
        wx = axis_weights(col, self.tile_width, self.width, self.overlap)
        return np.outer(wy, wx).astype(np.float32)


def pad_tile(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pad (..., h, w) at the bottom and right to (..., height, width) by mirroring."""
    pad_h, pad_w = height - x.shape[-2], width - x.shape[-1]
    if pad_h == 0 and pad_w == 0:
        return x
    pad = [(0, 0)] * (x.ndim - 2) + [(0, pad_h), (0, pad_w)]
    return np.pad(x, pad, mode="symmetric")


class StripBlender:
    """Weighted average of overlapping tile predictions, one strip of tile rows at a time.

    Call :meth:`start_row` with each tile row's first row (increasing), :meth:`add` for the
    tiles of that row, and collect the finished rows that :meth:`start_row` and :meth:`finish`
    return, NaN where the tiles' validity says there is no data. Memory: two float32 and one
    bool (tile_height, width) buffers.

    Args:
        grid: The tile grid being blended.
    """

    def __init__(self, grid: TileGrid) -> None:
        self.grid = grid
        rows = min(grid.tile_height, grid.height)
        self._value = np.zeros((rows, grid.width), dtype=np.float32)
        self._weight = np.zeros((rows, grid.width), dtype=np.float32)
        self._valid = np.ones((rows, grid.width), dtype=bool)
        self._origin = 0  # scene row of buffer row 0

    def start_row(self, row: int) -> Iterator[tuple[int, np.ndarray]]:
        """Begin the tile row starting at scene row ``row``.

        Returns:
            The finished rows above ``row``, as (first scene row, float32 (n, width)) pieces.
        """
        if row < self._origin:
            raise ValueError(f"tile rows must increase; got {row} after {self._origin}")
        return self._release(row - self._origin)

    def add(self, row: int, col: int, values: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Accumulate one tile's (tile_height, tile_width) prediction at (row, col).

        ``valid`` is the tile's bool (tile_height, tile_width) validity (None: all valid);
        every tile over a pixel reads the same validity there.
        """
        g = self.grid
        top = row - self._origin
        h = min(g.tile_height, g.height - row)
        w = min(g.tile_width, g.width - col)
        weight = g.weights(row, col)[:h, :w]
        self._value[top : top + h, col : col + w] += weight * values[:h, :w]
        self._weight[top : top + h, col : col + w] += weight
        if valid is not None:
            self._valid[top : top + h, col : col + w] &= valid[:h, :w]

    def finish(self) -> Iterator[tuple[int, np.ndarray]]:
        """Return the remaining rows after the last tile row was added."""
        return self._release(self.grid.height - self._origin)

    def _release(self, count: int) -> Iterator[tuple[int, np.ndarray]]:
        if count <= 0:
            return iter(())
        count = min(count, self._value.shape[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            done = self._value[:count] / self._weight[:count]
        done[~self._valid[:count]] = np.nan
        first = self._origin
        keep = self._value.shape[0] - count
        for buffer, empty in ((self._value, 0.0), (self._weight, 0.0), (self._valid, True)):
            buffer[:keep] = buffer[count:]
            buffer[keep:] = empty
        self._origin += count
        return iter([(first, done)])


# Test-time augmentation: the 8 symmetries of the square as (quarter turns, mirror).
DIHEDRAL: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))


def apply_dihedral(x: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    """Rotate (..., h, w) by ``turns`` quarter turns, then mirror left-right if asked."""
    y = np.rot90(x, turns, axes=(-2, -1))
    return np.ascontiguousarray(y[..., ::-1] if mirror else y)


def invert_dihedral(x: np.ndarray, turns: int, mirror: bool) -> np.ndarray:
    """Undo :func:`apply_dihedral` on (..., h', w')."""
    y = x[..., ::-1] if mirror else x
    return np.ascontiguousarray(np.rot90(y, -turns, axes=(-2, -1)))


def tta_transforms(tta: bool) -> tuple[tuple[int, bool], ...]:
    """The symmetries to average: all 8 with test-time augmentation, else the identity."""
    return DIHEDRAL if tta else ((0, False),)


def dihedral_average(
    predict: Callable[[np.ndarray, np.ndarray, tuple[int, bool]], np.ndarray],
    t1: np.ndarray,
    t2: np.ndarray,
    transforms: Sequence[tuple[int, bool]],
) -> np.ndarray:
    """Mean of ``predict`` over transformed inputs, each output mapped back.

    Args:
        predict: Called as ``predict(t1', t2', transform)`` on the transformed (B, C, h', w')
            tiles; returns (B, 1, h', w') probabilities.
        t1: (B, C, h, w) first-date tiles.
        t2: (B, C, h, w) second-date tiles.
        transforms: (quarter turns, mirror) pairs, e.g. :func:`tta_transforms`.

    Returns:
        float32 (B, h, w) averaged probabilities.
    """
    total = np.zeros((t1.shape[0], *t1.shape[-2:]), dtype=np.float32)
    for t in transforms:
        out = predict(apply_dihedral(t1, *t), apply_dihedral(t2, *t), t)
        total += invert_dihedral(np.asarray(out, dtype=np.float32), *t)[:, 0]
    return total / len(transforms)
