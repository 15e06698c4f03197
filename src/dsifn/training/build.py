"""The parts of a training run, built in named steps: checks, data, model, optimisation, loaders.

:func:`check_run` comes first: everything that can fail is checked (by rank 0, the others
waiting for its word) before the run directory is touched, so a mistyped ``data.root`` or
missing weights never leave a folder that blocks the retry. Then every process builds its
parts: :func:`open_datasets`, :func:`build_model`, :func:`build_step` (the model on its
device, its wrapper, optimiser and loss) and :func:`make_loaders`.
"""

from __future__ import annotations

import math
import random
import shutil
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from dsifn.contract import InputContract
from dsifn.data import (
    OSCD_BANDS,
    ChangeDetectionDataset,
    DetectedLayout,
    check_splits,
    resolve_layout,
)
from dsifn.devices import resolve_precision
from dsifn.distributed import DistContext, EpochSampler, ShardSampler, agree
from dsifn.errors import ConfigError, OutputExistsError
from dsifn.io.atomic import check_output_folder
from dsifn.models.checkpoint import model_with_weights
from dsifn.models.dsifn import DSIFNConfig
from dsifn.models.registry import ChangeNetwork, ModelConfig, build_network, entry_of
from dsifn.models.vgg import fetch_encoder_weights
from dsifn.training.config import TrainConfig, loss_weights
from dsifn.training.optim import build_optimisation
from dsifn.training.resume import read_resume, seed_everything
from dsifn.training.step import TrainStep

__all__ = [
    "RUN_FILES",
    "Checked",
    "Datasets",
    "Loaders",
    "build_model",
    "build_step",
    "check_run",
    "make_loaders",
    "open_datasets",
    "training_contract",
]

# What a run directory holds; starting again with overwrite=True removes exactly these.
RUN_FILES = (
    "config.yaml",
    "last.pt",
    "best.pt",
    "metrics.jsonl",
    "metrics.csv",
    "curves.png",
    "tensorboard",
)


@dataclass(frozen=True)
class Datasets:
    """The two splits a run uses."""

    train: ChangeDetectionDataset  # augmented, its order drawn per epoch
    val: ChangeDetectionDataset  # the split ``validation.split`` names


@dataclass(frozen=True)
class Checked:
    """What the checks of :func:`check_run` found, for every process to build on."""

    layout: DetectedLayout  # the dataset's layout, with its validation split
    payload: dict[str, Any] | None  # last.pt, when resuming
    datasets: Datasets | None = None  # rank 0: opened while checking
    resumed: ChangeNetwork | None = None  # rank 0: the model of last.pt, built while checking


@dataclass(frozen=True)
class Loaders:
    """The data loaders of a run, and what the epoch loop needs to know of them."""

    sampler: EpochSampler  # the training order, set per epoch (and position, on resuming)
    train: DataLoader[Any]
    val: DataLoader[Any]  # this process's shard of the validation split
    batches_per_epoch: int  # training batches of one epoch, on each process


def check_run(
    config: TrainConfig,
    run_dir: Path,
    ctx: DistContext,
    device: torch.device,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> Checked:
    """Check the run directory, data, weights and settings; then write the config.

    Rank 0 checks, then every process agrees: an error on rank 0 stops them all.

    Raises:
        OutputExistsError, CheckpointError, ConfigError, DataError, WeightsError: On what
            the run cannot start with.
    """
    checked: Checked | None = None
    error: BaseException | None = None
    if ctx.is_main:
        try:
            checked = _check_on_main(
                config, run_dir, device, resume=resume, overwrite=overwrite, progress=progress
            )
        except Exception as exc:  # re-raised by agree() after telling the other ranks
            error = exc
    agree(ctx, error is None, error)
    if checked is None:  # another rank: rank 0 found everything in order
        payload = read_resume(run_dir) if resume else None
        checked = Checked(resolve_layout(config.data), payload)
    return checked


def _check_on_main(
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    *,
    resume: bool,
    overwrite: bool,
    progress: bool,
) -> Checked:
    """Rank 0's part of :func:`check_run`, in the order the errors are met."""
    _check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    payload = read_resume(run_dir) if resume else None
    layout = _check_data(config, progress=progress)
    model = config.model
    if not resume and isinstance(model, DSIFNConfig) and model.encoder_weights is not None:
        fetch_encoder_weights(model.encoder_weights)
    datasets = open_datasets(config, layout)
    _check_settings(config, device)
    # A model.* override that contradicts last.pt is refused here.
    resumed = None if payload is None else _resumed_model(config, payload, run_dir)
    _write_run_dir(run_dir, config, resume=resume)
    return Checked(layout, payload, datasets, resumed)


def _check_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> None:
    check_output_folder(run_dir)  # a file at run_dir, or where one of its parents must be
    if resume:
        return
    if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"run directory {run_dir} is not empty; pass `overwrite=True` to start again "
            "or `resume=True` to continue it"
        )


def _write_run_dir(run_dir: Path, config: TrainConfig, *, resume: bool) -> None:
    if not resume:
        for name in RUN_FILES:  # an earlier run's files, when overwriting
            target = run_dir / name
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
        run_dir.mkdir(parents=True, exist_ok=True)
    # On resuming, overrides given then (a longer schedule, say) belong to the record too.
    config.save(run_dir / "config.yaml", overwrite=True)


def _check_data(config: TrainConfig, *, progress: bool) -> DetectedLayout:
    data = config.data
    if not data.root:
        raise ConfigError("no dataset given: pass `data.root=PATH`")
    layout = resolve_layout(data)  # with the val split data.val_cities / val_fraction ask
    splits = ("train", config.validation.split)
    layout.require(splits, f"training needs {' and '.join(repr(s) for s in splits)}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # printed below, once
        found_warnings = check_splits(data, splits, layout=layout, progress=progress)
    for text in found_warnings:
        print(f"warning: {text}", file=sys.stderr)
    return layout


def _check_settings(config: TrainConfig, device: torch.device) -> None:
    """Refuse what the set-up would refuse later: precision, loss weights, optimiser, schedule.

    The loss weights are checked by the function the training step takes them with, and the
    optimisation is built once over a one-element stand-in parameter, by the function the
    training step builds it with, so torch's own checks of its values run before the run
    directory is touched.
    """
    precision = resolve_precision(config.run.precision, device)
    entry = entry_of(config.model)
    loss_weights(config.loss, len(entry.network.output_strides), entry.title)
    probe = [torch.nn.Parameter(torch.zeros(1))]
    try:
        build_optimisation(
            probe, config.optim, config.schedule, device=device, precision=precision, fused=False
        )
    except ValueError as exc:
        raise ConfigError(f"the optim or schedule settings are refused: {exc}") from exc


def _resumed_model(config: TrainConfig, payload: Mapping[str, Any], run_dir: Path) -> ChangeNetwork:
    return model_with_weights(
        config.model,
        payload["state_dict"],
        source=f"last.pt in {run_dir} (was model.* changed?)",
    ).train()


def open_datasets(config: TrainConfig, layout: DetectedLayout) -> Datasets:
    """Data: open both splits and check their band count against the model's.

    Raises:
        ConfigError: If the data's band count is not ``model.in_channels``.
    """
    train = ChangeDetectionDataset(
        config.data, "train", train=True, seed=config.run.seed, layout=layout
    )
    val = ChangeDetectionDataset(config.data, config.validation.split, layout=layout)
    if train.bands != config.model.in_channels:
        raise ConfigError(
            f"the data has {train.bands} bands but model.in_channels is "
            f"{config.model.in_channels}; set model.in_channels={train.bands}"
        )
    return Datasets(train, val)


def build_model(
    config: TrainConfig, ctx: DistContext, checked: Checked, run_dir: Path
) -> ChangeNetwork:
    """Model: a new network (``model.name``) from the seed, or ``last.pt``'s; generators seeded.

    Every process builds the same weights from ``run.seed``; processes other than rank 0 then
    reseed, so that their dropout differs. A resume sets the random states again later.
    """
    seed_everything(config.run.seed)
    if checked.payload is not None:
        model = checked.resumed or _resumed_model(config, checked.payload, run_dir)
    else:
        model = build_network(config.model)
    if ctx.rank:
        seed_everything(config.run.seed + ctx.rank)  # dropout differs between ranks
    return model


def build_step(
    config: TrainConfig, model: ChangeNetwork, device: torch.device, ctx: DistContext
) -> TrainStep:
    """Optimisation: ``model`` on its device, its wrapper, the optimiser, scaler and loss."""
    return TrainStep(
        model,
        loss=config.loss,
        optim=config.optim,
        schedule=config.schedule,
        device=device,
        precision=config.run.precision,
        channels_last=config.run.channels_last,
        compile=config.run.compile,
        ctx=ctx,
    )


def make_loaders(
    config: TrainConfig, datasets: Datasets, ctx: DistContext, device: torch.device
) -> Loaders:
    """Loaders: this process's shard of each split, its training order a function of the seed."""
    run = config.run
    workers = run.resolved_workers()  # no more than the cores allow
    sampler = EpochSampler(
        len(datasets.train), rank=ctx.rank, world_size=ctx.world_size, seed=run.seed
    )
    shard = ShardSampler(len(datasets.val), rank=ctx.rank, world_size=ctx.world_size)
    seed = run.seed + ctx.rank
    per_process = math.ceil(len(datasets.train) / ctx.world_size)
    return Loaders(
        sampler=sampler,
        train=_loader(datasets.train, sampler, run.batch_size, workers, device, seed),
        val=_loader(datasets.val, shard, config.validation.batch_size, workers, device, seed),
        batches_per_epoch=math.ceil(per_process / run.batch_size),
    )


def _loader(
    dataset: ChangeDetectionDataset,
    sampler: Sampler[int],
    batch_size: int,
    workers: int,
    device: torch.device,
    seed: int,
) -> DataLoader[Any]:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        worker_init_fn=_seed_worker,
        # Its own generator: drawing worker seeds must not move the global torch stream.
        generator=torch.Generator().manual_seed(seed),
    )


def training_contract(
    config: TrainConfig, model: ModelConfig, train_set: ChangeDetectionDataset
) -> InputContract:
    """How this run's model input is made from files, as its checkpoints record it.

    The data's reading is the training set's: its ``radiometry`` decided for the dataset.
    """
    threshold = config.validation.threshold
    contract = InputContract.for_training(train_set.config, model, threshold)
    return contract.replace(bands=_band_names(config.data.bands, train_set))


def _band_names(
    bands: tuple[int, ...] | tuple[str, ...] | None, dataset: ChangeDetectionDataset
) -> tuple[int, ...] | tuple[str, ...] | None:
    """The bands to record: by name where the samples are named band files (OSCD).

    The files a user gives ``dsifn predict`` come in any order (a shell glob sorts B8A after
    B12), so a model trained on band files records which files, by name, in which order.
    """
    if dataset.layout.name != "oscd":
        return bands
    if bands is None:
        return OSCD_BANDS
    return tuple(b if isinstance(b, str) else OSCD_BANDS[b - 1] for b in bands)


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy and Python in a loader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
