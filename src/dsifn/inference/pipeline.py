"""The tile loop: tiles read ahead on threads, blended, finished rows written on one thread.

Plain tiles (:func:`run_tiles`), every pass of scene-wide attention
(:func:`dsifn.inference.scene_attention.run_scene_attention`) and the images of evaluation and
validation (:func:`predict_images`) run through the same pieces:

- :class:`TileReader` reads the next batches of tiles of a pair (both dates, scaled, with their
  validity: :meth:`dsifn.io.pairs.ImagePair.read`) on up to :data:`READERS` threads while the
  model predicts, normalises them and hands them over in order. A GDAL dataset must not be read
  by two threads at once, so each reader thread reads through its own file handles
  (:meth:`~dsifn.io.pairs.ImagePair.reopen`).
- :class:`RowWriter` writes finished rows (NaN where either date has no data, as the tiles'
  validity says) on one thread, in order.

An error on either thread is raised in the thread that runs the model.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar

import numpy as np
import torch

from dsifn.errors import ConfigError
from dsifn.inference.runner import TileRunner
from dsifn.inference.tiling import (
    StripBlender,
    TileGrid,
    dihedral_average,
    pad_tile,
    tta_transforms,
)
from dsifn.io.image_source import MemorySource
from dsifn.io.pairs import ImagePair, PairData
from dsifn.scaling import Scaling

if TYPE_CHECKING:
    from dsifn.contract import InputContract

__all__ = [
    "DEFAULT_TILE",
    "DEFAULT_WINDOW",
    "READERS",
    "Batch",
    "RowWriter",
    "TileReader",
    "fits_one_tile",
    "memory_pair",
    "normalizer",
    "plan_tiles",
    "predict_images",
    "run_tiles",
    "tile_side",
]

# Default tile side for models that take any size: the paper's training size.
DEFAULT_TILE = 512
# Default window side of scene-wide attention: 1024 keeps a core of 448 pixels inside the
# 288-pixel margins.
DEFAULT_WINDOW = 1024
# Threads reading tiles ahead of the model (each with its own file handles).
READERS = max(1, min(4, os.cpu_count() or 1))

Tile = TypeVar("Tile")  # what a reader needs to find one tile: an origin, a window's spans
Rows = tuple[int, np.ndarray]  # first scene row, float32 (n, width) probabilities


class Batch(NamedTuple):
    """One batch of tiles of both dates, normalised for the runner, with their validity."""

    t1: np.ndarray  # float32 (B, C, h, w)
    t2: np.ndarray  # float32 (B, C, h, w)
    valid: np.ndarray  # bool (B, h, w): both dates have data


def normalizer(runner: TileRunner) -> Callable[[Sequence[np.ndarray]], np.ndarray]:
    """Stacks scaled (C, h, w) tiles into a batch normalised for ``runner``: (B, C, h, w)."""
    normalize = runner.contract.normalization

    def norm(batch: Sequence[np.ndarray]) -> np.ndarray:
        return np.asarray(normalize(torch.from_numpy(np.stack(batch))).numpy(), dtype=np.float32)

    return norm


class TileReader(Generic[Tile]):
    """Batches of a pair's tiles, read on threads ahead of the model, in order.

    Use it as a context manager: leaving it stops the threads and closes their file handles.

    Args:
        pair: Both dates, open.
        read_tile: Called on a reader thread as ``read_tile(pair, tile)``: the tile of both
            dates read from ``pair`` (that thread's own copy), scaled, padded as the model
            needs.
        normalize: Stacks scaled tiles into a normalised float32 (B, C, h, w) array.
        readers: Reader threads; None: :data:`READERS`.
    """

    def __init__(
        self,
        pair: ImagePair,
        read_tile: Callable[[ImagePair, Tile], PairData],
        normalize: Callable[[Sequence[np.ndarray]], np.ndarray],
        readers: int | None = None,
    ) -> None:
        self._readers = READERS if readers is None else readers
        if self._readers < 1:
            raise ConfigError(f"readers must be at least 1; got {self._readers}")
        self._pair = pair
        self._read_tile = read_tile
        self._normalize = normalize
        self._local = threading.local()  # each thread's own copy of the pair
        self._reopened: list[ImagePair] = []  # those copies, closed on exit
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
            for pair in self._reopened:
                pair.close()
            self._reopened.clear()

    def read(self, jobs: Iterable[Sequence[Tile]]) -> Iterator[tuple[Sequence[Tile], Batch]]:
        """Each job (the tiles of one batch) with its batch, in the order given.

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
        # On a reader thread: the job's tiles, through this thread's copy of the pair.
        if not hasattr(self._local, "pair"):
            self._local.pair = self._reopen()
        tiles = [self._read_tile(self._local.pair, tile) for tile in job]
        return Batch(
            self._normalize([t.values[0] for t in tiles]),
            self._normalize([t.values[1] for t in tiles]),
            np.stack([t.valid for t in tiles]),
        )

    def _reopen(self) -> ImagePair:
        copy = self._pair.reopen()
        with self._lock:
            self._reopened.append(copy)
        return copy


class RowWriter:
    """Writes finished rows on one thread, in order.

    Use it as a context manager: leaving it normally waits for the last write and raises its
    error. One piece of rows at most waits to be written while the next is computed.

    Args:
        write_rows: Called on the writer thread as ``write_rows(first_row, values)`` with
            float32 (n, width) probabilities (NaN: no data), rows in increasing order.
    """

    def __init__(self, write_rows: Callable[[int, np.ndarray], None]) -> None:
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

        The arrays must not be changed by the caller afterwards.
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
            self._write_rows(first, values)


def read_tile(pair: ImagePair, grid: TileGrid, row: int, col: int) -> PairData:
    """A tile of both dates: scaled, 0 where either has no data, padded past the scene."""
    tile = pair.read(row, col, grid.tile_height, grid.tile_width)
    h, w = grid.tile_height, grid.tile_width
    return PairData(pad_tile(tile.values, h, w), pad_tile(tile.valid, h, w), tile.scaling)


def _predict_batch(runner: TileRunner, batch: Batch, tta: bool) -> np.ndarray:
    # Normalised (B, C, h, w) tiles -> (B, h, w) probabilities, TTA-averaged if asked.
    return dihedral_average(lambda a, b, _: runner(a, b), batch.t1, batch.t2, tta_transforms(tta))


def run_tiles(
    runner: TileRunner,
    pair: ImagePair,
    grid: TileGrid,
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
        pair: Both dates, open.
        grid: Tiles to predict.
        write_rows: Called as ``write_rows(first_row, values)`` with float32 (n, width)
            probabilities, NaN where either date has no data, rows in increasing order.
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

    def read(pair: ImagePair, origin: tuple[int, int]) -> PairData:
        return read_tile(pair, grid, *origin)

    with (
        TileReader(pair, read, normalizer(runner), readers) as reader,
        RowWriter(write_rows) as writer,
        progress_bar(len(grid), "dsifn predict", "tile", enabled=progress) as bar,
    ):
        current: int | None = None
        for job, batch in reader.read(jobs):
            row = job[0][0]
            if row != current:
                writer.put(blender.start_row(row))
                current = row
            probability = _predict_batch(runner, batch, tta)
            for (_, col), p, valid in zip(job, probability, batch.valid, strict=True):
                blender.add(row, col, p, valid)
            bar.update(len(job))
        writer.put(blender.finish())


def tile_side(
    fixed: int | None,
    asked: int | None,
    trained: int | None,
    *,
    attention: str = "tile",
    what: str = "tile_size",
) -> int:
    """The side of the tiles to cut, the one rule: fixed, else asked, else trained, else default.

    Args:
        fixed: The only side the model takes, or None.
        asked: The side asked for, or None.
        trained: The tile side the model's input contract says it trained on, or None.
        attention: ``"scene"``: the side of scene-wide attention's windows, whose default
            (:data:`DEFAULT_WINDOW`) follows from the model's receptive field, not training.
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
    if attention == "scene":
        return asked or DEFAULT_WINDOW
    return asked or trained or DEFAULT_TILE


def plan_tiles(
    runner: TileRunner,
    height: int,
    width: int,
    tile_size: int | None = None,
    overlap: int | None = None,
    *,
    contract: InputContract | None = None,
) -> tuple[TileGrid, int, int]:
    """The tiles ``dsifn predict`` cuts an image into, with their side and overlap.

    Args:
        runner: The model (a fixed-size model takes its size only).
        height: Image rows.
        width: Image columns.
        tile_size: Tile side asked for (:func:`tile_side` decides).
        overlap: Pixels shared by neighbours; None: an eighth of the tile.
        contract: The input contract whose trained tile side applies; None: the runner's.

    Returns:
        The grid (tiles shrink to an image smaller than one), the tile side and the overlap.
    """
    trained = (runner.contract if contract is None else contract).tile_size
    tile = tile_side(runner.tile_size, tile_size, trained)
    overlap = tile // 8 if overlap is None else overlap
    fixed = runner.tile_size is not None
    return TileGrid.plan(height, width, tile, overlap, fixed=fixed), tile, overlap


def fits_one_tile(
    runner: TileRunner, height: int, width: int, tile_size: int | None = None
) -> bool:
    """Whether an image goes through ``runner`` whole: it is one tile of its own size."""
    return _whole(plan_tiles(runner, height, width, tile_size)[0], height, width)


def _whole(grid: TileGrid, height: int, width: int) -> bool:
    return len(grid) == 1 and (grid.tile_height, grid.tile_width) == (height, width)


def memory_pair(images: np.ndarray) -> ImagePair:
    """An in-memory pair of already scaled dates (float32 (2, C, H, W) in [0, 1]), all valid."""
    bands = images.shape[1]
    as_is = Scaling((0.0,) * bands, (1.0,) * bands, "already in [0, 1]", clip=False)
    return ImagePair(MemorySource(images[0], name="T1"), MemorySource(images[1], name="T2"), as_is)


def predict_images(
    runner: TileRunner, images: np.ndarray, *, tile_size: int | None = None
) -> np.ndarray:
    """Change probabilities of in-memory pairs of any size: the one rule of batched prediction.

    Images that fit in one tile go through the runner whole, as one batch; larger ones through
    the tile loop, tiled and blended exactly as ``dsifn predict`` tiles a scene, so evaluation
    and validation score the map ``dsifn predict`` writes.

    Args:
        runner: The model.
        images: float32 (B, 2, C, H, W) pairs scaled to [0, 1] (0 where there is no data).
        tile_size: Tile side asked for (:func:`tile_side` decides).

    Returns:
        float32 (B, 1, H, W) probabilities at every pixel (where a date has no data, of its
        zeros: the caller's validity leaves those pixels out).
    """
    height, width = images.shape[-2:]
    grid, _, _ = plan_tiles(runner, height, width, tile_size)
    if _whole(grid, height, width):
        norm = normalizer(runner)
        return runner(norm(list(images[:, 0])), norm(list(images[:, 1])))
    maps = []
    for pair_values in images:
        out = np.empty((height, width), dtype=np.float32)

        def write_rows(first: int, values: np.ndarray, out: np.ndarray = out) -> None:
            out[first : first + values.shape[0]] = values

        run_tiles(runner, memory_pair(pair_values), grid, write_rows, progress=False, readers=1)
        maps.append(out)
    return np.stack(maps)[:, None]
