"""Change maps of every pair of two folders, on one process or shared among ``torchrun``'s.

Images of the two folders are paired by file name (:func:`pair_folders`); each pair gets a map
of its name in the output folder, a PNG for plain images and a GeoTIFF otherwise
(:func:`plan_outputs`), and :func:`predict_folders` predicts them all with one model.

Under ``torchrun`` (``WORLD_SIZE`` > 1) the pairs are shared among the processes: in round
``k`` rank ``r`` predicts pair ``k * world_size + r``, on its own GPU where there are GPUs
(``cuda:LOCAL_RANK``), else on the CPU. The processes exchange only small Python objects (the
plan, each round's results or error) over gloo. Rank 0 pairs the folders and checks every
output before any process writes; after each round the processes agree, so a failed pair
stops every rank with its error (:func:`dsifn.distributed.agree_gather`). Each map is written
by one process, atomically (:func:`dsifn.io.atomic.staged`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsifn.distributed import (
    DistContext,
    agree_gather,
    on_main,
    process_device,
    setup_distributed,
)
from dsifn.errors import ConfigError, InputError
from dsifn.inference.loading import load_runner
from dsifn.inference.options import PathLike, SceneOptions, SceneResult
from dsifn.inference.outputs import check_map_format, complete_map
from dsifn.inference.runner import TileRunner
from dsifn.inference.scene import predict_scene
from dsifn.io.atomic import check_output_path
from dsifn.io.images import is_plain

__all__ = [
    "FolderPairs",
    "FolderPlan",
    "FolderResult",
    "PairJob",
    "Share",
    "pair_folders",
    "plan_outputs",
    "predict_folders",
]


@dataclass(frozen=True)
class FolderPairs:
    """The image files of two folders, paired by name."""

    before_dir: Path  # T1 images
    after_dir: Path  # T2 images
    matched: tuple[str, ...]  # names in both folders, sorted
    only_before: tuple[str, ...]  # names without a T2 image, sorted
    only_after: tuple[str, ...]  # names without a T1 image, sorted


@dataclass(frozen=True)
class PairJob:
    """One pair to predict and where its change map goes."""

    before: Path
    after: Path
    out: Path


@dataclass(frozen=True)
class Share:
    """Which of ``count`` disjoint shares of the pairs a job predicts (raster-vision's split).

    The pairs, sorted by name, are cut into ``count`` runs of consecutive pairs whose sizes
    differ by one at most; share ``index`` (0-based, as a scheduler's array task id) is the
    ``index``-th. ``count`` jobs with indices 0 to ``count - 1`` cover every pair once.
    """

    count: int = 1  # number of shares (array jobs)
    index: int = 0  # this job's share, 0 .. count - 1

    def __post_init__(self) -> None:
        """Refuse a share that does not exist."""
        if self.count < 1:
            raise ConfigError(f"`num_splits` must be at least 1; got {self.count}")
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"`split_index` must be in 0..{self.count - 1} for {self.count} splits; "
                f"got {self.index}"
            )

    def of(self, names: Sequence[str]) -> tuple[str, ...]:
        """This share of ``names`` (in their order)."""
        n = len(names)
        return tuple(names[self.index * n // self.count : (self.index + 1) * n // self.count])


@dataclass(frozen=True)
class FolderPlan:
    """The pairs a folder run predicts, and those it leaves to others or finds done."""

    jobs: tuple[PairJob, ...]  # to predict, in name order
    skipped: tuple[str, ...]  # this share's pairs whose complete map exists (skip_existing)


@dataclass(frozen=True)
class FolderResult:
    """What :func:`predict_folders` wrote, on every process alike."""

    results: tuple[SceneResult, ...]  # every pair's, in name order
    rank: int  # this process's rank (0 without torchrun)
    world_size: int  # processes that shared the pairs
    skipped: tuple[str, ...] = ()  # pairs whose complete map existed (skip_existing)

    @property
    def tiles(self) -> int:
        """Tiles predicted over all pairs."""
        return sum(result.tiles for result in self.results)


def pair_folders(before_dir: PathLike, after_dir: PathLike) -> FolderPairs:
    """Pair the image files of two folders by name.

    Raises:
        InputError: If either is not a folder.
    """
    from dsifn.io.images import IMAGE_SUFFIXES

    first_dir, second_dir = Path(before_dir), Path(after_dir)
    for folder in (first_dir, second_dir):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder")

    def names(folder: Path) -> set[str]:
        return {p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}

    first, second = names(first_dir), names(second_dir)
    return FolderPairs(
        first_dir,
        second_dir,
        tuple(sorted(first & second)),
        tuple(sorted(first - second)),
        tuple(sorted(second - first)),
    )


def plan_outputs(
    pairs: FolderPairs,
    out_dir: PathLike,
    opts: SceneOptions,
    *,
    share: Share | None = None,
    skip_existing: bool = False,
) -> FolderPlan:
    """Name each pair's change map in ``out_dir`` and check them all, before any work.

    A pair of plain images (PNG/JPEG/BMP) gets ``<stem>.png``, any other ``<stem>.tif``.

    Args:
        pairs: The folders' pairing.
        out_dir: Folder of the change maps.
        opts: The scene options (overwrite, the map's format).
        share: The share of the pairs to predict; None: all.
        skip_existing: Leave out pairs whose complete map exists (a resumed run); a partial
            or foreign file at a map's place is refused as an existing output.

    Raises:
        InputError: If no names match, or two pairs would write the same map.
        OutputExistsError: If a map exists and neither ``overwrite`` nor ``skip_existing`` is
            set, or a file that is not a complete map stands where ``skip_existing`` looks.
        ConfigError: If a map cannot be written, or its format does not fit the options.
    """
    if not pairs.matched:
        unmatched = len(pairs.only_before) + len(pairs.only_after)
        raise InputError(
            f"no file names in {pairs.before_dir} match names in {pairs.after_dir} "
            f"({unmatched} image(s) without a partner)"
        )
    if skip_existing and opts.overwrite:
        raise ConfigError("give `overwrite=True` or `skip_existing=True`, not both")
    names = (share or Share()).of(pairs.matched)
    jobs: dict[Path, PairJob] = {}
    plains: dict[Path, bool] = {}  # whether each map's pair is of plain images
    for name in names:
        plain = is_plain([pairs.before_dir / name])
        out = Path(out_dir) / (Path(name).stem + (".png" if plain else ".tif"))
        if out in jobs:
            raise InputError(
                f"{jobs[out].before.name} and {name} would both write {out}; rename one"
            )
        jobs[out] = PairJob(pairs.before_dir / name, pairs.after_dir / name, out)
        plains[out] = plain
    skipped = []
    for out, job in list(jobs.items()):
        check_map_format(out, plain=plains[out], opts=opts)
        if skip_existing and complete_map(out):
            skipped.append(job.before.name)
            del jobs[out]
            continue
        check_output_path(out, overwrite=opts.overwrite)
    return FolderPlan(tuple(jobs.values()), tuple(skipped))


def predict_folders(
    runner_or_checkpoint: TileRunner | PathLike,
    before_dir: PathLike,
    after_dir: PathLike,
    out_dir: PathLike,
    options: SceneOptions | None = None,
    *,
    share: Share | None = None,
    skip_existing: bool = False,
    on_pairs: Callable[[FolderPairs], None] | None = None,
    on_result: Callable[[SceneResult], None] | None = None,
    **fields: Any,
) -> FolderResult:
    """Predict the change map of every pair of two folders, sharing them under ``torchrun``.

    Example:
        >>> predict_folders("model.pt", "t1/", "t2/", "change/")  # doctest: +SKIP

    Args:
        runner_or_checkpoint: A :class:`~dsifn.inference.runner.TileRunner`, or the path of a
            model file, loaded once per process (with ``runtime``, ``device``, ``precision``).
        before_dir: Folder of T1 images.
        after_dir: Folder of T2 images, paired with T1's by file name.
        out_dir: Folder of the change maps.
        options: How to tile, read and write (:class:`~dsifn.inference.options.SceneOptions`,
            without ``polygons`` and ``quicklook``, which name one file each); the same
            object serves every pair.
        share: Which share of the pairs this job predicts (array jobs of a scheduler that
            does not run torchrun); None: all. Under torchrun the processes share it further.
        skip_existing: Leave out pairs whose complete map exists, to resume a run that
            stopped (:func:`plan_outputs`).
        on_pairs: Called on rank 0 with the pairing when some names match, before any output
            is checked (to report names without a partner, say).
        on_result: Called on rank 0 with each pair's result, in name order: after each pair
            in a single process, after the last pair under ``torchrun``.
        **fields: Fields of :class:`~dsifn.inference.options.SceneOptions`, replacing those
            of ``options``.

    Returns:
        Every pair's result, on every process.

    Raises:
        InputError: If a folder is missing or no names match.
        OutputExistsError: If a map exists and ``overwrite`` is false (checked before any
            process writes).
        DSIFNError: Any pair's error, on every process (its own on the one it happened on).
    """
    opts = options or SceneOptions()
    if fields:
        opts = dataclasses.replace(opts, **fields)
    if opts.polygons is not None or opts.quicklook is not None:
        raise ConfigError(
            "polygons and quicklook name one file each: ask for them pair by pair (predict_scene)"
        )
    # Gloo on the CPU whatever the device: only small Python objects travel between processes.
    ctx = setup_distributed(torch.device("cpu"))
    try:
        plan = _plan_on_rank0(
            ctx,
            (before_dir, after_dir, out_dir),
            opts,
            on_pairs,
            share=share,
            skip_existing=skip_existing,
        )
        runner = _load_on_every_rank(ctx, runner_or_checkpoint, opts)
        results = _predict_shared(ctx, runner, plan.jobs, opts, on_result)
        return FolderResult(tuple(results), ctx.rank, ctx.world_size, plan.skipped)
    finally:
        ctx.close()


def _plan_on_rank0(
    ctx: DistContext,
    folders: tuple[PathLike, PathLike, PathLike],
    opts: SceneOptions,
    on_pairs: Callable[[FolderPairs], None] | None,
    *,
    share: Share | None,
    skip_existing: bool,
) -> FolderPlan:
    """Rank 0 pairs the folders and checks every output; every rank gets its plan."""

    def plan() -> FolderPlan:
        pairs = pair_folders(folders[0], folders[1])
        if on_pairs is not None and pairs.matched:
            on_pairs(pairs)
        return plan_outputs(pairs, folders[2], opts, share=share, skip_existing=skip_existing)

    return on_main(ctx, plan)


def _load_on_every_rank(
    ctx: DistContext, model: TileRunner | PathLike, opts: SceneOptions
) -> TileRunner:
    """The model on this process's device; every rank stops if one cannot load it."""
    runner: TileRunner | None = None
    error: Exception | None = None
    try:
        runner = _load(ctx, model, opts)
    except Exception as exc:  # re-raised by agree_gather after telling the other ranks
        error = exc
    agree_gather(ctx, None, error)
    assert runner is not None  # agree_gather raised otherwise
    return runner


def _load(ctx: DistContext, model: TileRunner | PathLike, opts: SceneOptions) -> TileRunner:
    if not isinstance(model, (str, os.PathLike)):
        return model
    device = opts.device
    if ctx.distributed:
        from dsifn.devices import resolve_device

        resolved = process_device(ctx, resolve_device(device))
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        device = str(resolved)
    return load_runner(model, runtime=opts.runtime, device=device, precision=opts.precision)


def _predict_shared(
    ctx: DistContext,
    runner: TileRunner,
    jobs: Sequence[PairJob],
    opts: SceneOptions,
    on_result: Callable[[SceneResult], None] | None,
) -> list[SceneResult]:
    """Every pair's result in order; under torchrun one bar over pairs on rank 0."""
    from dsifn.progress import progress_bar

    world = ctx.world_size
    # Under torchrun tile bars of several processes would interleave: one bar over pairs.
    scene = dataclasses.replace(opts, progress=opts.progress and world == 1)
    show = opts.progress and ctx.distributed and ctx.is_main
    results: list[SceneResult] = []
    with progress_bar(len(jobs), "dsifn predict", "pair", enabled=show) as bar:
        for first in range(0, len(jobs), world):
            done = _predict_round(ctx, runner, jobs[first : first + world], scene)
            results.extend(done)
            bar.update(len(done))
            if not ctx.distributed and on_result is not None:
                on_result(done[0])
    if ctx.distributed and ctx.is_main and on_result is not None:
        for result in results:
            on_result(result)
    return results


def _predict_round(
    ctx: DistContext, runner: TileRunner, jobs: Sequence[PairJob], options: SceneOptions
) -> list[SceneResult]:
    """One pair per rank (rank r takes ``jobs[r]``); every rank gets the round's results."""
    result: SceneResult | None = None
    error: Exception | None = None
    if ctx.rank < len(jobs):
        job = jobs[ctx.rank]
        try:
            result = predict_scene(runner, job.before, job.after, job.out, options)
        except Exception as exc:  # re-raised by agree_gather after telling the other ranks
            error = exc
    found = agree_gather(ctx, result, error)
    return [r for r in found if r is not None]
