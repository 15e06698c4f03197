"""The training loop: :func:`train` runs a :class:`~dsifn.training.config.TrainConfig`.

One process or several under ``torchrun`` (DDP); mixed precision, channels-last, optional
``torch.compile``, gradient accumulation and clipping. After each validation round (each epoch,
or every ``validation.every_steps`` optimiser steps) the run directory gets:

- ``last.pt``: the model (a normal dsifn checkpoint) plus a ``resume`` entry holding the
  optimiser, scheduler, loss scaler, position in the data, counters, history and every
  process's random-generator states, all plain values that load with ``weights_only=True``;
- ``best.pt``: the model of the best validation F1 so far, with ``meta["threshold"]``; until
  a round gives a finite F1 (a validation split without labelled pixels never does), the
  latest round's model, with ``meta["best_scored"]`` false;
- ``metrics.jsonl`` / ``metrics.csv`` (one row per round), ``curves.png`` and, when
  tensorboard is installed, ``tensorboard/`` events;
- ``config.yaml``: the resolved configuration, written at the start.

The order of the training data is a pure function of (seed, epoch) and the augmentation of
(seed, epoch, index), so a run resumed from ``last.pt`` repeats exactly what the uninterrupted
run would have done (bitwise on the CPU with ``run.deterministic``).
"""

from __future__ import annotations

import math
import random
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.data import (
    OSCD_BANDS,
    ChangeDetectionDataset,
    DetectedLayout,
    check_splits,
    resolve_layout,
)
from dsifn.devices import resolve_device, resolve_precision
from dsifn.distributed import (
    DistContext,
    EpochSampler,
    ShardSampler,
    agree,
    all_reduce_sum,
    broadcast_buffers,
    gather_objects,
    setup_distributed,
)
from dsifn.errors import CheckpointError, ConfigError, DataError, OutputExistsError
from dsifn.evaluation.scoring import score_batches
from dsifn.io.atomic import check_input_file, check_output_folder
from dsifn.io.checkpoint import model_with_weights, read_checkpoint, save_checkpoint
from dsifn.metrics import ConfusionMatrix
from dsifn.models.dsifn import DSIFN
from dsifn.models.vgg import fetch_encoder_weights
from dsifn.training.config import TrainConfig
from dsifn.training.logs import MetricsLog, plot_curves
from dsifn.training.optim import build_optimizer, build_scheduler
from dsifn.training.state import capture_rng, restore_rng, seed_everything
from dsifn.training.step import StepResult, TrainStep

__all__ = ["RUN_FILES", "Callback", "TrainResult", "train"]

# What a run directory holds; --overwrite removes exactly these before starting again.
RUN_FILES = (
    "config.yaml",
    "last.pt",
    "best.pt",
    "metrics.jsonl",
    "metrics.csv",
    "curves.png",
    "tensorboard",
)

# Called on every process after each validation round with that round's history entry;
# an exception raised by a callback stops training (``last.pt`` is already written).
Callback = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    """What :func:`train` returns."""

    run_dir: Path  # the run directory
    best_checkpoint: Path  # best.pt: highest validation F1 (the last round's if unscored)
    last_checkpoint: Path  # last.pt: the final state, with the resume entry
    history: list[dict[str, Any]]  # one dictionary per validation round
    best_scores: dict[str, float]  # validation scores of the best round
    best_epoch: int  # epochs completed when the best round ran
    stop_reason: str  # "epochs", "early_stop", "max_steps" or "time_limit"
    best_scored: bool  # whether any round gave a finite F1; if not, best.pt is only the last
    model: DSIFN = field(repr=False)  # the trained (last) model, in eval mode, on its device


@dataclass
class _Progress:
    """Counters that a resume restores."""

    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch consumed
    step: int = 0  # optimiser steps taken
    best_f1: float = -math.inf  # best validation F1 so far
    best_epoch: int = 0  # `epoch` at the best round
    best_scores: dict[str, float] = field(default_factory=dict)
    rounds_since_best: int = 0  # validation rounds without F1 gain (early stopping)
    elapsed_s: float = 0.0  # training time spent in earlier sessions of this run
    history: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, scores: Mapping[str, float], patience: int | None) -> tuple[bool, bool]:
        """Record a round's validation scores.

        Returns:
            Whether F1 improved on the best so far (a NaN F1 never does), and whether
            ``patience`` rounds in a row have now passed without improvement.
        """
        f1 = scores["f1"]
        improved = not math.isnan(f1) and f1 > self.best_f1
        if improved:
            self.best_f1 = f1
            self.best_epoch = self.epoch
            self.best_scores = dict(scores)
            self.rounds_since_best = 0
        else:
            self.rounds_since_best += 1
        return improved, patience is not None and self.rounds_since_best >= patience

    def to_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "step": self.step,
            "best_f1": self.best_f1,
            "best_epoch": self.best_epoch,
            "best_scores": dict(self.best_scores),
            "rounds_since_best": self.rounds_since_best,
            "elapsed_s": self.elapsed_s,
            "history": [dict(e) for e in self.history],
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> _Progress:
        return cls(
            epoch=int(values["epoch"]),
            batch_in_epoch=int(values["batch_in_epoch"]),
            step=int(values["step"]),
            best_f1=float(values["best_f1"]),
            best_epoch=int(values["best_epoch"]),
            best_scores={k: float(v) for k, v in values["best_scores"].items()},
            rounds_since_best=int(values["rounds_since_best"]),
            elapsed_s=float(values["elapsed_s"]),
            history=[dict(e) for e in values["history"]],
        )


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train a DSIFN as ``config`` describes, writing checkpoints and logs to ``run_dir``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process calls this; the
    process group is joined here (nccl on CUDA, gloo on the CPU) and only rank 0 writes files,
    prints and shows progress bars.

    Args:
        config: The run's configuration (``load_config`` builds one from YAML).
        run_dir: Folder for checkpoints, logs, curves and the resolved config.
        resume: Continue the run saved in ``run_dir/last.pt``: same weights, optimiser,
            scheduler, loss scaler, position in the data and random states.
        overwrite: Start again in a ``run_dir`` that holds an earlier run (its files are
            removed first).
        progress: Show progress bars (on a terminal) and a summary line per round.
        callbacks: Functions called with each round's history entry, on every process.

    Returns:
        Checkpoint paths, history and best scores; see :class:`TrainResult`.

    Raises:
        OutputExistsError: If ``run_dir`` holds files and neither ``resume`` nor ``overwrite``
            is set.
        CheckpointError: If ``resume`` is set and there is no usable ``last.pt``.
        ConfigError, DataError: On a bad configuration or dataset.
    """
    run_path = Path(run_dir)
    if resume and overwrite:
        raise ConfigError("resume and overwrite exclude each other: resume keeps the run")
    device = resolve_device(config.run.device)
    ctx = setup_distributed(device)
    # Global switches this run may change; the caller gets them back as they were.
    saved_flags = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        if ctx.distributed and device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
            torch.cuda.set_device(device)
        if config.run.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: autotuning pays off
        trainer = _Trainer(config, run_path, ctx, device, progress=progress, callbacks=callbacks)
        return trainer.run(resume=resume, overwrite=overwrite)
    finally:
        torch.use_deterministic_algorithms(saved_flags[0], warn_only=saved_flags[1])
        torch.backends.cudnn.deterministic = saved_flags[2]
        torch.backends.cudnn.benchmark = saved_flags[3]
        ctx.close()


class _Trainer:
    """State and steps of one training run (one process)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        ctx: DistContext,
        device: torch.device,
        *,
        progress: bool,
        callbacks: Sequence[Callback],
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.ctx = ctx
        self.device = device
        self.progress = progress and ctx.is_main
        self.callbacks = tuple(callbacks)
        self.log: MetricsLog | None = None
        self._resumed_net: DSIFN | None = None  # rank 0: built from last.pt while checking

    # ----------------------------------------------------------------- set-up

    def _prepare(self, *, resume: bool, overwrite: bool) -> tuple[dict[str, Any] | None, Any]:
        """Check the run directory and the data (rank 0 first, then all ranks agree)."""
        payload: dict[str, Any] | None = None
        layout: DetectedLayout | None = None
        error: BaseException | None = None
        if self.ctx.is_main:
            try:
                # Everything that can fail is checked before the run directory is touched, so a
                # typo in --data or missing weights never leaves a folder that blocks the retry.
                self._check_run_dir(resume=resume, overwrite=overwrite)
                payload = self._read_resume() if resume else None
                layout = self._check_data()
                if not resume and self.config.model.encoder_weights is not None:
                    fetch_encoder_weights(self.config.model.encoder_weights)
                self._make_datasets(layout)
                self._check_settings()
                if payload is not None:  # a model.* override that contradicts last.pt
                    self._resumed_net = self._resumed_model(payload)
                self._write_run_dir(resume=resume)
            except Exception as exc:  # re-raised by agree() after telling the other ranks
                error = exc
        agree(self.ctx, error is None, error)
        if not self.ctx.is_main:
            if resume:
                payload = self._read_resume()
            layout = resolve_layout(self.config.data)
        return payload, layout

    def _check_run_dir(self, *, resume: bool, overwrite: bool) -> None:
        run_dir = self.run_dir
        check_output_folder(run_dir)  # a file at run_dir, or where one of its parents must be
        if resume:
            return
        if run_dir.is_dir() and any(run_dir.iterdir()) and not overwrite:
            raise OutputExistsError(
                f"run directory {run_dir} is not empty; pass --overwrite to start again "
                "or --resume to continue it"
            )

    def _write_run_dir(self, *, resume: bool) -> None:
        run_dir = self.run_dir
        if not resume:
            for name in RUN_FILES:  # an earlier run's files, when overwriting
                target = run_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                else:
                    target.unlink(missing_ok=True)
            run_dir.mkdir(parents=True, exist_ok=True)
        # On resuming, overrides given then (a longer schedule, say) belong to the record too.
        self.config.save(run_dir / "config.yaml", overwrite=True)

    def _read_resume(self) -> dict[str, Any]:
        last = self.run_dir / "last.pt"
        if not last.exists():
            raise CheckpointError(f"nothing to resume: {last} does not exist")
        check_input_file(last, "resume checkpoint", CheckpointError)  # a folder named last.pt
        payload = read_checkpoint(last)
        if not isinstance(payload.get("resume"), Mapping):
            raise CheckpointError(f"{last} holds no resume state (was it written by dsifn train?)")
        return payload

    def _check_data(self) -> DetectedLayout:
        data = self.config.data
        if not data.root:
            raise ConfigError("no dataset given: pass --data PATH or data.root=PATH")
        layout = resolve_layout(data)  # with the val split data.val_cities / val_fraction ask
        splits = ("train", self.config.validation.split)
        for split in splits:
            if split not in layout.splits:
                found = ", ".join(layout.splits) or "none"
                raise DataError(
                    f"{layout.root} has no {split!r} split (found: {found}); training needs "
                    f"{' and '.join(repr(s) for s in splits)}"
                )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # printed below, once
            found_warnings = check_splits(data, splits, layout=layout, progress=self.progress)
        for text in found_warnings:
            print(f"warning: {text}", file=sys.stderr)
        return layout

    def _make_datasets(self, layout: DetectedLayout) -> None:
        """Open both splits and check their band count against the model's (may raise)."""
        cfg = self.config
        self.train_set = ChangeDetectionDataset(
            cfg.data, "train", train=True, seed=cfg.run.seed, layout=layout
        )
        self.val_set = ChangeDetectionDataset(cfg.data, cfg.validation.split, layout=layout)
        if self.train_set.bands != cfg.model.in_channels:
            raise ConfigError(
                f"the data has {self.train_set.bands} bands but model.in_channels is "
                f"{cfg.model.in_channels}; set model.in_channels={self.train_set.bands}"
            )

    def _check_settings(self) -> None:
        """Refuse what the set-up would refuse later: precision, optimiser and schedule values.

        The optimiser and scheduler are built once over a one-element stand-in parameter, so
        torch's own checks of their values run before the run directory is touched.
        """
        cfg = self.config
        resolve_precision(cfg.run.precision, self.device)
        try:
            probe = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg.optim, fused=False)
            build_scheduler(probe, cfg.schedule)
        except ValueError as exc:
            raise ConfigError(f"the optim or schedule settings are refused: {exc}") from exc

    def _resumed_model(self, payload: Mapping[str, Any]) -> DSIFN:
        return model_with_weights(
            self.config.model,
            payload["state_dict"],
            source=f"last.pt in {self.run_dir} (was model.* changed?)",
        ).train()

    def _build(self, payload: Mapping[str, Any] | None, layout: Any) -> None:
        cfg = self.config
        ctx = self.ctx
        if not hasattr(self, "train_set"):  # rank 0 opened them while checking
            self._make_datasets(layout)

        seed_everything(cfg.run.seed)
        if payload is not None:
            # Rank 0 built it while checking; the random states are set again below.
            net = self._resumed_net or self._resumed_model(payload)
        else:
            net = DSIFN(cfg.model)
        if ctx.rank:
            seed_everything(cfg.run.seed + ctx.rank)  # dropout differs between ranks
        self.step = TrainStep(
            net,
            loss=cfg.loss,
            optim=cfg.optim,
            device=self.device,
            precision=cfg.run.precision,
            channels_last=cfg.run.channels_last,
            compile=cfg.run.compile,
            ctx=ctx,
        )
        self.net = net
        self.optimizer = self.step.optimizer
        self.scheduler = build_scheduler(self.optimizer, cfg.schedule)
        self.scaler = self.step.scaler

        cuda = self.device.type == "cuda"
        workers = cfg.run.resolved_workers()  # no more than the cores allow
        self.sampler = EpochSampler(
            len(self.train_set), rank=ctx.rank, world_size=ctx.world_size, seed=cfg.run.seed
        )
        self.train_loader = DataLoader(
            self.train_set,
            batch_size=cfg.run.batch_size,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=cuda,
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker,
            # Its own generator: drawing worker seeds must not move the global torch stream.
            generator=torch.Generator().manual_seed(cfg.run.seed + ctx.rank),
        )
        self.val_loader = DataLoader(
            self.val_set,
            batch_size=cfg.validation.batch_size,
            sampler=ShardSampler(len(self.val_set), rank=ctx.rank, world_size=ctx.world_size),
            num_workers=workers,
            pin_memory=cuda,
            persistent_workers=workers > 0,
            worker_init_fn=_seed_worker,
            generator=torch.Generator().manual_seed(cfg.run.seed + ctx.rank),
        )
        self.batches_per_epoch = math.ceil(
            math.ceil(len(self.train_set) / ctx.world_size) / cfg.run.batch_size
        )

        self.state = _Progress()
        if payload is not None:
            self._restore(payload["resume"])

    def _restore(self, saved: Mapping[str, Any]) -> None:
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
            if self.scheduler is not None and saved.get("scheduler") is not None:
                self.scheduler.load_state_dict(saved["scheduler"])
            self.scaler.load_state_dict(saved["scaler"])
            self.state = _Progress.from_dict(saved["progress"])
            rng_states = list(saved["rng"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"the resume state in last.pt is incomplete: {exc}") from exc
        if len(rng_states) == self.ctx.world_size:
            restore_rng(rng_states[self.ctx.rank])
        else:
            warnings.warn(
                f"last.pt was written by {len(rng_states)} processes, this run has "
                f"{self.ctx.world_size}: random states restart from the seed, so the run "
                "continues but not bit for bit",
                stacklevel=3,
            )
            seed_everything(self.config.run.seed + 7919 * self.state.step + self.ctx.rank)

    # -------------------------------------------------------------- the loop

    def run(self, *, resume: bool, overwrite: bool) -> TrainResult:
        payload, layout = self._prepare(resume=resume, overwrite=overwrite)
        self._build(payload, layout)
        if self.ctx.is_main:
            self.log = MetricsLog(self.run_dir, tensorboard=self.config.run.tensorboard)
        try:
            reason = self._loop()
        finally:
            if self.log is not None:
                self.log.close()
        self.net.eval()
        state = self.state
        return TrainResult(
            run_dir=self.run_dir,
            best_checkpoint=self.run_dir / "best.pt",
            last_checkpoint=self.run_dir / "last.pt",
            history=[dict(e) for e in state.history],
            best_scores=dict(state.best_scores),
            best_epoch=state.best_epoch,
            stop_reason=reason,
            best_scored=bool(state.best_scores),
            model=self.net,
        )

    def _loop(self) -> str:
        cfg = self.config
        state = self.state
        self.session_start = time.monotonic()
        self._reset_train_stats()
        every = cfg.validation.every_steps
        # A resumed run may already be past a step limit (a longer `epochs` continues it).
        reason = self._limit_reason() if self._limit_reached() else ""
        self.step.module.train()
        while not reason and state.epoch < cfg.schedule.epochs:
            for _ in self._epoch_steps():
                # The last batch of an epoch always ends an optimiser step, so the epoch is
                # closed here, before any round saves the position to resume from.
                epoch_done = state.batch_in_epoch >= self.batches_per_epoch
                if epoch_done:
                    self._close_epoch()
                if (every is None and epoch_done) or (every and state.step % every == 0):
                    reason = self._round()
                if not reason and self._limit_reached():
                    reason = self._limit_reason()
                if reason or epoch_done:
                    break
            else:  # the loader gave fewer batches than counted: never expected, never loop
                self._close_epoch()
        if not reason:
            reason = "epochs"
        last = state.history[-1] if state.history else None
        if last is None or last["step"] != state.step:
            self._round(final_reason=reason)  # the steps since the last round count too
        elif not last.get("stop_reason"):
            last["stop_reason"] = reason  # the last round was the final one: say so
            self._save_and_log(improved=False, curves=True)
        return str(state.history[-1].get("stop_reason", reason))

    def _close_epoch(self) -> None:
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        if self.scheduler is not None and self.config.schedule.scheduler == "cosine":
            self.scheduler.step()

    def _limit_reached(self) -> bool:
        sched = self.config.schedule
        hit = sched.max_steps is not None and self.state.step >= sched.max_steps
        if sched.max_minutes is not None:
            spent = self.state.elapsed_s + time.monotonic() - self.session_start
            over = spent >= 60.0 * sched.max_minutes
            # Clocks differ between processes: rank 0 decides for everyone.
            flags = all_reduce_sum(self.ctx, [1.0 if over and self.ctx.is_main else 0.0])
            hit = hit or flags[0] > 0
        return hit

    def _limit_reason(self) -> str:
        sched = self.config.schedule
        if sched.max_steps is not None and self.state.step >= sched.max_steps:
            return "max_steps"
        return "time_limit"

    def _epoch_steps(self) -> Iterator[None]:
        """Train through the rest of the current epoch, yielding after each optimiser step."""
        cfg = self.config
        state = self.state
        self.train_set.set_epoch(state.epoch)
        self.sampler.set_epoch(state.epoch, skip=state.batch_in_epoch * cfg.run.batch_size)
        bar = _bar(
            self.progress,
            total=self.batches_per_epoch,
            initial=state.batch_in_epoch,
            desc=f"epoch {state.epoch + 1}/{cfg.schedule.epochs}",
        )
        try:
            for batch in self.train_loader:
                state.batch_in_epoch += 1
                out = self.step(
                    batch,
                    flush=state.batch_in_epoch >= self.batches_per_epoch,
                    where=f" at step {state.step + 1} of epoch {state.epoch + 1}",
                )
                self._record(out)
                bar.update(1)
                if out.stepped:
                    state.step += 1
                    bar.set_postfix(
                        loss=f"{self._loss_sum / max(self._loss_count, 1):.4f}",
                        f1=f"{self._train_cm.scores()['f1']:.3f}",
                    )
                    if state.batch_in_epoch >= self.batches_per_epoch:
                        bar.close()  # finished: the round's summary line goes below it
                    yield
        finally:
            bar.close()

    @torch.no_grad()
    def _record(self, out: StepResult) -> None:
        """Add a training batch's loss and predictions to the round's training scores."""
        count = int(out.mask.shape[0])
        self._loss_sum += float(out.loss) * count
        self._loss_count += count
        self._train_cm.update(torch.sigmoid(out.logits.float()), out.mask, out.valid)

    def _reset_train_stats(self) -> None:
        self._loss_sum = 0.0
        self._loss_count = 0
        self._train_cm = ConfusionMatrix(self.config.validation.threshold)

    # ------------------------------------------------------------ validation

    def _contract(self) -> InputContract:
        """How this run's model input is made from files, as its checkpoints record it."""
        data = self.config.data
        threshold = self.config.validation.threshold
        contract = InputContract.for_training(data, self.net.config, threshold)
        return contract.replace(bands=_band_names(data.bands, self.train_set))

    def _validate(self) -> tuple[dict[str, float], float]:
        """Scores and mean loss of the validation split, each process scoring its shard."""
        net = self.net
        net.eval()
        loss_sum, count = 0.0, 0

        runner = self.step.runner(self._contract())  # tiles large images as predict does

        def predict(batch: Mapping[str, Any]) -> Tensor:
            # Images larger than a training tile (whole OSCD cities) are tiled as dsifn
            # predict tiles them; their loss is not defined and is left out of the mean.
            nonlocal loss_sum, count
            prob, loss = self.step.evaluate_tiled(batch, runner)
            if math.isfinite(float(loss)):
                loss_sum += float(loss) * int(prob.shape[0])
                count += int(prob.shape[0])
            return prob

        bar = _bar(self.progress, iterable=self.val_loader, desc="validation", leave=False)
        try:
            result = score_batches(
                bar, predict, threshold=self.config.validation.threshold, ctx=self.ctx
            )
        finally:
            bar.close()
            net.train()
        loss_sum, count_f = all_reduce_sum(self.ctx, [loss_sum, float(count)])
        return result.scores, loss_sum / count_f if count_f else math.nan

    def _round(self, final_reason: str = "") -> str:
        """Validate, update schedule and best, save, log; return a stop reason or ""."""
        cfg = self.config
        state = self.state
        broadcast_buffers(self.ctx, self.net)
        scores, val_loss = self._validate()
        self._train_cm.all_reduce()
        loss_sum, loss_count = all_reduce_sum(self.ctx, [self._loss_sum, float(self._loss_count)])
        train_scores = self._train_cm.scores()
        lr = float(self.optimizer.param_groups[0]["lr"])

        f1 = scores["f1"]
        improved, patience_spent = state.observe(scores, cfg.schedule.early_stop_patience)
        if self.scheduler is not None and cfg.schedule.scheduler == "plateau":
            self.scheduler.step(f1 if not math.isnan(f1) else -math.inf)
        reason = final_reason or ("early_stop" if patience_spent else "")

        entry: dict[str, Any] = {
            "epoch": state.epoch,
            "step": state.step,
            "lr": lr,
            "train_loss": loss_sum / loss_count if loss_count else math.nan,
            "train_f1": train_scores["f1"],
            "val_loss": val_loss,
            **{f"val_{k}": v for k, v in scores.items()},
            "best_f1": state.best_f1,
            "time_s": state.elapsed_s + time.monotonic() - self.session_start,
        }
        if reason:
            entry["stop_reason"] = reason
        state.history.append(entry)
        self._save_and_log(improved=improved, curves=state.batch_in_epoch == 0 or bool(reason))
        if self.progress:
            _print_round(entry, cfg.schedule.epochs)
        self._reset_train_stats()
        for callback in self.callbacks:
            callback(dict(entry))
        return reason

    def _save_and_log(self, *, improved: bool, curves: bool) -> None:
        """Write best.pt (if improved or never scored), last.pt with resume state, logs, curves.

        Curves are drawn at the end of epochs and of the run only: rounds every few steps
        would spend noticeable time in matplotlib.
        """
        state = self.state
        rng = gather_objects(self.ctx, capture_rng())  # every rank's, for an exact resume
        if not self.ctx.is_main:
            return
        threshold = self.config.validation.threshold
        meta = {
            CONTRACT_KEY: self._contract().to_dict(),  # how this model's input is made
            "source": "dsifn train",
            "training": self.config.to_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "best_f1": state.best_f1,
            "threshold": threshold,
            "scores": dict(state.history[-1]) if state.history else {},
        }
        scored = bool(state.best_scores)
        # With no finite F1 yet there is no best to keep, but a run must still name a best.pt:
        # it follows the latest round and says that it is unscored.
        if improved or not scored:
            best_meta = {**meta, "best_scored": scored}
            save_checkpoint(self.run_dir / "best.pt", self.net, meta=best_meta, overwrite=True)
        elapsed = state.elapsed_s + time.monotonic() - self.session_start
        progress = state.to_dict()
        progress["elapsed_s"] = elapsed
        resume = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": progress,
            "rng": rng,
            "world_size": self.ctx.world_size,
        }
        save_checkpoint(
            self.run_dir / "last.pt", self.net, meta=meta, overwrite=True, resume=resume
        )
        if self.log is not None:
            self.log.write(state.history)
        if curves:
            plot_curves(state.history, self.run_dir / "curves.png")


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


def _bar(enabled: bool, **options: Any) -> Any:
    from dsifn.progress import progress_bar

    # Not a terminal (logs, CI): a few plain lines instead of a redrawing bar.
    return progress_bar(enabled=enabled, unit="batch", **options)


def _print_round(entry: Mapping[str, Any], epochs: int) -> None:
    from dsifn.progress import write

    text = (
        f"epoch {entry['epoch']}/{epochs} step {entry['step']}: "
        f"train loss {entry['train_loss']:.4f} F1 {entry['train_f1']:.3f} | "
        f"val loss {entry['val_loss']:.4f} F1 {entry['val_f1']:.3f} "
        f"IoU {entry['val_iou']:.3f} | lr {entry['lr']:.2e} | best F1 {entry['best_f1']:.3f}"
    )
    if entry.get("stop_reason"):
        text += f" | stop: {entry['stop_reason']}"
    write(text)
