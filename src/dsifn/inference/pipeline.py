"""The tile loop of scene inference: tiles read ahead on threads, finished rows written on one.

Plain tiles (:func:`run_tiles`) and every pass of scene-wide attention
(:func:`dsifn.inference.scene_attention.run_scene_attention`) run through the same two pieces:

- :class:`TileReader` reads, scales and normalises the next batches of tiles on up to
  :data:`READERS` threads while the model predicts, and hands them over in order. A GDAL
  dataset must not be read by two threads at once, so each reader thread reads through its own
  file handles (:meth:`~dsifn.inference.sources.SceneSource.reopen`).
- :class:`RowWriter` sets finished rows to NaN where either date is invalid and writes them on
  one thread, in order; it is the only thread that reads the original sources.

An error on either thread is raised in the thread that runs the model.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

import numpy as np
import torch

from dsifn.errors import ConfigError
from dsifn.inference.runner import TileRunner
from dsifn.inference.sources import SceneSource, both_valid, read_scaled
from dsifn.inference.tiling import (
    StripBlender,
    TileGrid,
    dihedral_average,
    pad_tile,
    tta_transforms,
)
from dsifn.io.images import MemorySource
from dsifn.scaling import Scaling

__all__ = [
    "DEFAULT_TILE",
    "READERS",
    "RowWriter",
    "TileReader",
    "normalizer",
    "plan_tiles",
    "predict_array",
    "run_tiles",
    "tile_side",
    "tiled_probabilities",
]

# Default tile side for models that take any size: the paper's training size.
DEFAULT_TILE = 512
# Threads reading tiles ahead of the model (each with its own file handles).
READERS = max(1, min(4, os.cpu_count() or 1))

Tile = TypeVar("Tile")  # what a reader needs to find one tile: an origin, a window's spans
Batch = tuple[np.ndarray, np.ndarray]  # normalised float32 (B, C, h, w) tiles of T1 and T2
Rows = tuple[int, np.ndarray]  # first scene row, float32 (n, width) probabilities


def normalizer(runner: TileRunner) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """Stacks scaled (C, h, w) tiles into a batch normalised for ``runner``: (B, C, h, w)."""
    normalize = runner.normalization

    def norm(batch: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(normalize(torch.from_numpy(np.stack(batch))).numpy(), dtype=np.float32)

    return norm


class TileReader(Generic[Tile]):
    """Batches of both dates' tiles, read on threads ahead of the model, in order.

    Use it as a context manager: leaving it stops the threads and closes their file handles.

    Args:
        t1: First date.
        t2: Second date, on the same grid.
        read_tile: Called on a reader thread as ``read_tile(source, tile)``: the scaled
            float32 (C, h, w) tile, read from ``source`` (that thread's own copy of a date).
        normalize: Stacks a batch of scaled tiles into a normalised float32 (B, C, h, w) array.
        readers: Reader threads; None: :data:`READERS`.
    """

    def __init__(
        self,
        t1: SceneSource,
        t2: SceneSource,
        read_tile: Callable[[SceneSource, Tile], np.ndarray],
        normalize: Callable[[Sequence[np.ndarray]], np.ndarray],
        readers: int | None = None,
    ) -> None:
        self._readers = READERS if readers is None else readers
        if self._readers < 1:
            raise ConfigError(f"readers must be at least 1; got {self._readers}")
        self._dates = (t1, t2)
        self._read_tile = read_tile
        self._normalize = normalize
        self._local = threading.local()  # each thread's own copies of the dates
        self._reopened: list[SceneSource] = []  # those copies, closed on exit
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> TileReader[Tile]:
        self._pool = ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="dsifn-read")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
        finally:
            self._pool = None
            for source in self._reopened:
                source.close()
            self._reopened.clear()

    def read(self, jobs: Iterable[Sequence[Tile]]) -> Iterator[tuple[Sequence[Tile], Batch]]:
        """Each job (the tiles of one batch) with its T1 and T2 batches, in the order given.

        Up to ``readers + 1`` batches are read ahead; a reader's error is raised here.
        """
        pool = self._pool
        if pool is None:
            raise RuntimeError("TileReader.read is for use inside its with block")
        queue = iter(jobs)
        pending: deque[tuple[Sequence[Tile], Future[Batch]]] = deque()

        def submit_next() -> None:
            job = next(queue, None)
            if job is not None:
                pending.append((job, pool.submit(self._load, job)))

        for _ in range(self._readers + 1):
            submit_next()
        while pending:
            job, future = pending.popleft()
            batch = future.result()
            submit_next()
            yield job, batch

    def _load(self, job: Sequence[Tile]) -> Batch:
        # On a reader thread: the job's tiles of both dates, through this thread's copies.
        if not hasattr(self._local, "dates"):
            self._local.dates = tuple(self._reopen(source) for source in self._dates)
        first, second = self._local.dates
        a = [self._read_tile(first, tile) for tile in job]
        b = [self._read_tile(second, tile) for tile in job]
        return self._normalize(a), self._normalize(b)

    def _reopen(self, source: SceneSource) -> SceneSource:
        copy = source.reopen()
        if copy is not source:
            with self._lock:
                self._reopened.append(copy)
        return copy


class RowWriter:
    """Writes finished rows on one thread, in order, NaN where either date is invalid.

    Use it as a context manager: leaving it normally waits for the last write and raises its
    error. One piece of rows at most waits to be written while the next is computed.

    Args:
        t1: First date (read by the writer thread only, for its validity).
        t2: Second date.
        write_rows: Called on the writer thread as ``write_rows(first_row, values)`` with
            float32 (n, width) probabilities, rows in increasing order.
    """

    def __init__(
        self,
        t1: SceneSource,
        t2: SceneSource,
        write_rows: Callable[[int, np.ndarray], None],
    ) -> None:
        self._dates = (t1, t2)
        self._write_rows = write_rows
        self._pool: ThreadPoolExecutor | None = None
        self._written: Future[None] | None = None

    def __enter__(self) -> RowWriter:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dsifn-write")
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        try:
            if exc_type is None:
                self._wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = None

    def put(self, pieces: Iterable[Rows]) -> None:
        """Hand over finished rows; first waits for the previous ones (raising their error).

        The arrays are masked in place and must not be changed by the caller afterwards.
        """
        if self._pool is None:
            raise RuntimeError("RowWriter.put is for use inside its with block")
        rows = list(pieces)
        if rows:
            self._wait()
            self._written = self._pool.submit(self._write, rows)

    def _wait(self) -> None:
        if self._written is not None:
            self._written.result()

    def _write(self, pieces: Sequence[Rows]) -> None:
        for first, values in pieces:
            values[~both_valid(*self._dates, first, values.shape[0])] = np.nan
            self._write_rows(first, values)


def _tile_input(
    source: SceneSource, grid: TileGrid, row: int, col: int, scaling: Scaling
) -> np.ndarray:
    # (C, th, tw) scaled [0, 1] tile, padded past the scene; invalid pixels set to 0.
    h = min(grid.tile_height, grid.height - row)
    w = min(grid.tile_width, grid.width - col)
    values = read_scaled(source, row, col, h, w, scaling)
    return pad_tile(values, grid.tile_height, grid.tile_width)


def _predict_batch(runner: TileRunner, t1: np.ndarray, t2: np.ndarray, tta: bool) -> np.ndarray:
    # (B, C, h, w) normalised tiles -> (B, h, w) probabilities, TTA-averaged if asked.
    return dihedral_average(lambda a, b, _: runner(a, b), t1, t2, tta_transforms(tta))


def run_tiles(
    runner: TileRunner,
    t1: SceneSource,
    t2: SceneSource,
    grid: TileGrid,
    scaling: Scaling,
    write_rows: Callable[[int, np.ndarray], None],
    *,
    batch_size: int = 1,
    tta: bool = False,
    progress: bool = True,
    readers: int | None = None,
) -> None:
    """Predict every tile of ``grid`` and hand finished, blended rows to ``write_rows``.

    Args:
        runner: The model.
        t1: First date.
        t2: Second date, on the same grid.
        grid: Tiles to predict.
        scaling: Raw values to [0, 1].
        write_rows: Called as ``write_rows(first_row, values)`` with float32 (n, width)
            probabilities, NaN where either date is invalid, rows in increasing order.
        batch_size: Tiles per runner call.
        tta: Average the 8 flips and rotations.
        progress: Show progress over tiles (:func:`dsifn.progress.progress_bar`).
        readers: Threads reading tiles ahead of the model; None: :data:`READERS`.
    """
    from dsifn.progress import progress_bar

    blender = StripBlender(grid)
    jobs = [
        [(row, col) for col in grid.col_starts[i : i + batch_size]]
        for row in grid.row_starts
        for i in range(0, len(grid.col_starts), batch_size)
    ]

    def read_tile(source: SceneSource, origin: tuple[int, int]) -> np.ndarray:
        return _tile_input(source, grid, *origin, scaling)

    with (
        TileReader(t1, t2, read_tile, normalizer(runner), readers) as reader,
        RowWriter(t1, t2, write_rows) as writer,
        progress_bar(len(grid), "dsifn predict", "tile", enabled=progress) as bar,
    ):
        current: int | None = None
        for job, (a, b) in reader.read(jobs):
            row = job[0][0]
            if row != current:
                writer.put(blender.start_row(row))
                current = row
            probability = _predict_batch(runner, a, b, tta)
            for (_, col), p in zip(job, probability, strict=True):
                blender.add(row, col, p)
            bar.update(len(job))
        writer.put(blender.finish())


def plan_tiles(
    runner: TileRunner,
    height: int,
    width: int,
    tile_size: int | None = None,
    overlap: int | None = None,
) -> tuple[TileGrid, int, int]:
    """The tiles ``dsifn predict`` cuts an image into, with their side and overlap.

    Args:
        runner: The model (a fixed-size model takes its size only).
        height: Image rows.
        width: Image columns.
        tile_size: Tile side; None: the model's fixed size, else the tile size its input
            contract says it trained on, else :data:`DEFAULT_TILE`.
        overlap: Pixels shared by neighbours; None: an eighth of the tile.

    Returns:
        The grid (tiles shrink to an image smaller than one), the tile side and the overlap.
    """
    tile = tile_side(runner.tile_size, tile_size, runner.contract.tile_size)
    overlap = tile // 8 if overlap is None else overlap
    fixed = runner.tile_size is not None
    return TileGrid.plan(height, width, tile, overlap, fixed=fixed), tile, overlap


def tile_side(
    fixed: int | None, asked: int | None, trained: int | None, *, what: str = "tile_size"
) -> int:
    """The side of the tiles to cut: a fixed-size model's size, else asked, trained or default.

    Args:
        fixed: The only side the model takes, or None.
        asked: The side asked for, or None.
        trained: The tile side the model's input contract says it trained on, or None.
        what: The parameter that asked, for the message.

    Raises:
        ConfigError: If a fixed-size model is asked for another side.
    """
    if fixed is not None:
        if asked is not None and asked != fixed:
            raise ConfigError(
                f"this model takes {fixed}x{fixed} tiles only; `{what}={asked}` is not possible"
            )
        return fixed
    return asked or trained or DEFAULT_TILE


def predict_array(runner: TileRunner, t1: np.ndarray, t2: np.ndarray, grid: TileGrid) -> np.ndarray:
    """(H, W) probabilities of an in-memory pair, tiled and blended exactly as a scene is.

    Args:
        runner: The model.
        t1: float32 (C, H, W) first date, scaled to [0, 1].
        t2: float32 (C, H, W) second date.
        grid: The tiles (:func:`plan_tiles`).
    """
    out = np.empty((grid.height, grid.width), dtype=np.float32)

    def write_rows(first: int, values: np.ndarray) -> None:
        out[first : first + values.shape[0]] = values

    bands = t1.shape[0]
    as_is = Scaling((0.0,) * bands, (1.0,) * bands, "already in [0, 1]", clip=False)
    pair = MemorySource(t1, name="T1"), MemorySource(t2, name="T2")
    run_tiles(runner, *pair, grid, as_is, write_rows, progress=False, readers=1)
    return out


def tiled_probabilities(
    runner: TileRunner, images: np.ndarray, tile_size: int | None = None
) -> np.ndarray | None:
    """(B, 1, H, W) probabilities of in-memory pairs tiled as scenes are, or None if one fits.

    Evaluation and validation predict whole images that fit in one tile as a batch, their own
    way; larger ones go through here, so they are scored on the map ``dsifn predict`` writes.

    Args:
        runner: The model.
        images: float32 (B, 2, C, H, W) pairs scaled to [0, 1].
        tile_size: As in :func:`plan_tiles`.

    Returns:
        The tiled probabilities, or None when each image is a single tile of its own size.
    """
    height, width = images.shape[-2:]
    grid, _, _ = plan_tiles(runner, height, width, tile_size)
    if len(grid) == 1 and (grid.tile_height, grid.tile_width) == (height, width):
        return None
    maps = [predict_array(runner, pair[0], pair[1], grid) for pair in images]
    return np.stack(maps)[:, None]
