"""The training loop: :func:`train` runs a :class:`~dsifn.training.config.TrainConfig`.

One process or several under ``torchrun`` (DDP); mixed precision, channels-last, optional
``torch.compile`` (opt-in, for the reasons :mod:`dsifn.training.step` gives), gradient
accumulation and clipping. After each validation round (each epoch, or every
``validation.every_steps`` optimiser steps) the run directory gets:

- ``last.pt``: the model (a normal dsifn checkpoint) plus a ``resume`` entry holding the
  optimiser, scheduler, loss scaler, position in the data, counters, history and every
  process's random-generator states (:mod:`dsifn.training.resume`);
- ``best.pt``: the model of the best validation F1 so far, with its input contract (which holds
  the decision threshold); until
  a round gives a finite F1 (a validation split without labelled pixels never does), the
  latest round's model, with ``meta["best_scored"]`` false;
- ``metrics.jsonl`` / ``metrics.csv`` (one row per round: the round's scores, the training
  time so far ``time_s`` and the seconds its validation took ``val_s``), ``curves.png`` and, when
  tensorboard is installed, ``tensorboard/`` events;
- ``config.yaml``: the resolved configuration, written at the start.

The order of the training data is a pure function of (seed, epoch) and the augmentation of
(seed, epoch, index), so a run resumed from ``last.pt`` repeats exactly what the uninterrupted
run would have done (bitwise on the CPU with ``run.deterministic`` and one thread per
process: on some CPUs, AVX-512 Xeons among them, kernels on several threads sum in an order
that varies from run to run).

A run's parts are built in :mod:`dsifn.training.build`; here they run: epochs of optimiser
steps, a validation round (:mod:`dsifn.training.validation`) every epoch or few steps, and
the checkpoints and logs each round writes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from dsifn.contract import CONTRACT_KEY
from dsifn.devices import resolve_device
from dsifn.distributed import (
    DistContext,
    all_reduce_sum,
    broadcast_buffers,
    gather_objects,
    setup_distributed,
)
from dsifn.errors import ConfigError
from dsifn.metrics import ConfusionMatrix
from dsifn.models.checkpoint import save_checkpoint
from dsifn.models.registry import ChangeNetwork
from dsifn.progress import progress_bar, write
from dsifn.training.build import (
    RUN_FILES,
    Checked,
    build_model,
    build_step,
    check_run,
    make_loaders,
    open_datasets,
    training_contract,
)
from dsifn.training.config import TrainConfig
from dsifn.training.logs import MetricsLog, plot_curves, round_summary
from dsifn.training.resume import Progress, capture_rng, restore_resume, resume_entry
from dsifn.training.step import StepResult
from dsifn.training.validation import validate

__all__ = ["RUN_FILES", "Callback", "TrainResult", "train"]

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
    model: ChangeNetwork = field(repr=False)  # the trained (last) model, eval mode, its device


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Train the network ``config`` names, writing checkpoints and logs to ``run_dir``.

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
    try:
        if ctx.distributed and device.type == "cuda":
            device = torch.device("cuda", ctx.local_rank)
            torch.cuda.set_device(device)
        with _kernel_choice(deterministic=config.run.deterministic, device=device):
            shown = progress and ctx.is_main
            checked = check_run(
                config, run_path, ctx, device, resume=resume, overwrite=overwrite, progress=shown
            )
            trainer = _Trainer(
                config, run_path, ctx, device, checked, progress=shown, callbacks=callbacks
            )
            return trainer.run()
    finally:
        ctx.close()


@contextlib.contextmanager
def _kernel_choice(*, deterministic: bool, device: torch.device) -> Iterator[None]:
    """Set torch's global kernel switches for the run; give them back as they were."""
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    try:
        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed crop sizes: autotuning pays off
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic = saved[2]
        torch.backends.cudnn.benchmark = saved[3]


class _RoundScores:
    """Loss and confusion matrix of this process's training batches since the last round."""

    def __init__(self, threshold: float) -> None:
        self.loss_sum = 0.0  # sum over pairs of their batch's loss
        self.pairs = 0
        self.matrix = ConfusionMatrix(threshold)

    @torch.no_grad()
    def add(self, out: StepResult) -> None:
        """Add a training batch's loss and predictions."""
        count = int(out.mask.shape[0])
        self.loss_sum += float(out.loss) * count
        self.pairs += count
        self.matrix.update(torch.sigmoid(out.logits.float()), out.mask, out.valid)

    def postfix(self) -> dict[str, str]:
        """This process's figures so far, for the progress bar."""
        loss = self.loss_sum / max(self.pairs, 1)
        return {"loss": f"{loss:.4f}", "f1": f"{self.matrix.scores()['f1']:.3f}"}

    def reduce(self, ctx: DistContext) -> tuple[float, float]:
        """Mean loss and F1 over every process's batches (collective: all ranks call it)."""
        self.matrix.all_reduce()
        loss_sum, pairs = all_reduce_sum(ctx, [self.loss_sum, float(self.pairs)])
        return (loss_sum / pairs if pairs else math.nan), self.matrix.scores()["f1"]


class _Trainer:
    """One process's part of a training run: its parts, where it stands, and the loop."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        ctx: DistContext,
        device: torch.device,
        checked: Checked,
        *,
        progress: bool,
        callbacks: Sequence[Callback],
    ) -> None:
        """Build the run's parts in order: data, model, optimisation, loaders, resume state."""
        self.config = config
        self.run_dir = run_dir
        self.ctx = ctx
        self.show_progress = progress  # bars and round lines (rank 0 only)
        self.callbacks = tuple(callbacks)
        self.data = checked.datasets or open_datasets(config, checked.layout)
        self.model = build_model(config, ctx, checked, run_dir)  # the network: trained, saved
        self.step = build_step(config, self.model, device, ctx)
        self.wrapped = self.step.wrapped  # what runs the step: DDP / compiled / the model
        self.optimizer = self.step.optimizer
        self.scheduler = self.step.scheduler
        self.loaders = make_loaders(config, self.data, ctx, device)
        self.contract = training_contract(config, self.model.config, self.data.train)
        self.state = Progress()  # where the run stands: at the start, or as last.pt left it
        if checked.payload is not None:
            self.state = restore_resume(
                checked.payload["resume"],
                optimizer=self.optimizer,
                scheduler=self.scheduler,
                scaler=self.step.scaler,
                ctx=ctx,
                seed=config.run.seed,
            )
        self.round_scores = _RoundScores(config.validation.threshold)
        self.log = MetricsLog(run_dir, tensorboard=config.run.tensorboard) if ctx.is_main else None
        self.session_start = time.monotonic()  # this session's clock; earlier ones in state

    def run(self) -> TrainResult:
        """Train to the end (or a limit), then return the result; closes the logs."""
        try:
            reason = self._loop()
        finally:
            if self.log is not None:
                self.log.close()
        self.model.eval()
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
            model=self.model,
        )

    # -------------------------------------------------------------- the loop

    def _loop(self) -> str:
        """Epochs until the last one or a limit, then the final round; the stop reason."""
        state = self.state
        # A resumed run may already be past a step limit (a longer `epochs` continues it).
        reason = self._limit_reason() if self._limit_reached() else ""
        self.wrapped.train()
        while not reason and state.epoch < self.config.schedule.epochs:
            reason = self._train_epoch()
        reason = reason or "epochs"
        last = state.history[-1] if state.history else None
        if last is None or last["step"] != state.step:
            self._round(final_reason=reason)  # the steps since the last round count too
        elif not last.get("stop_reason"):
            last["stop_reason"] = reason  # the last round was the final one: say so
            self._save_and_log(improved=False, curves=True)
        return str(state.history[-1].get("stop_reason", reason))

    def _train_epoch(self) -> str:
        """Train through the rest of the current epoch; a stop reason, or "" to go on."""
        cfg, state, loaders = self.config, self.state, self.loaders
        every = cfg.validation.every_steps
        self.data.train.set_epoch(state.epoch)
        loaders.sampler.set_epoch(state.epoch, skip=state.batch_in_epoch * cfg.run.batch_size)
        bar = progress_bar(
            enabled=self.show_progress,
            unit="batch",
            total=loaders.batches_per_epoch,
            initial=state.batch_in_epoch,
            desc=f"epoch {state.epoch + 1}/{cfg.schedule.epochs}",
        )
        with contextlib.closing(bar):
            for batch in loaders.train:
                state.batch_in_epoch += 1
                # The last batch of an epoch always ends an optimiser step.
                epoch_done = state.batch_in_epoch >= loaders.batches_per_epoch
                where = f" at step {state.step + 1} of epoch {state.epoch + 1}"
                out = self.step(batch, flush=epoch_done, where=where)
                self.round_scores.add(out)
                bar.update(1)
                if not out.stepped:
                    continue
                state.step += 1
                bar.set_postfix(**self.round_scores.postfix())
                if epoch_done:
                    bar.close()  # finished: the round's summary line goes below it
                    self._close_epoch()  # before a round saves the position to resume from
                reason = ""
                if (every is None and epoch_done) or (every and state.step % every == 0):
                    reason = self._round()
                if not reason and self._limit_reached():
                    reason = self._limit_reason()
                if reason or epoch_done:
                    return reason
        # The loader gave fewer batches than counted: never expected; the epoch ends anyway.
        self._close_epoch()
        return ""

    def _close_epoch(self) -> None:
        self.state.epoch += 1
        self.state.batch_in_epoch = 0
        if self.scheduler is not None and self.config.schedule.scheduler == "cosine":
            self.scheduler.step()

    def _elapsed(self) -> float:
        """Training time of the run so far, earlier sessions included."""
        return self.state.elapsed_s + time.monotonic() - self.session_start

    def _limit_reached(self) -> bool:
        """Whether ``schedule.max_steps`` or ``schedule.max_minutes`` is reached (collective)."""
        sched = self.config.schedule
        hit = sched.max_steps is not None and self.state.step >= sched.max_steps
        if sched.max_minutes is not None:
            over = self._elapsed() >= 60.0 * sched.max_minutes
            # Clocks differ between processes: rank 0 decides for everyone.
            flags = all_reduce_sum(self.ctx, [1.0 if over and self.ctx.is_main else 0.0])
            hit = hit or flags[0] > 0
        return hit

    def _limit_reason(self) -> str:
        sched = self.config.schedule
        if sched.max_steps is not None and self.state.step >= sched.max_steps:
            return "max_steps"
        return "time_limit"

    # ------------------------------------------------------------ the rounds

    def _round(self, final_reason: str = "") -> str:
        """Validate, update schedule and best, save, log; return a stop reason or ""."""
        cfg, state = self.config, self.state
        threshold = cfg.validation.threshold
        broadcast_buffers(self.ctx, self.model)
        began = time.monotonic()
        scores, val_loss = validate(
            self.step,
            self.loaders.val,
            self.contract,
            threshold=threshold,
            ctx=self.ctx,
            progress=self.show_progress,
        )
        train_loss, train_f1 = self.round_scores.reduce(self.ctx)
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
            "train_loss": train_loss,
            "train_f1": train_f1,
            "val_loss": val_loss,
            **{f"val_{k}": v for k, v in scores.items()},
            "best_f1": state.best_f1,
            "time_s": self._elapsed(),
            "val_s": time.monotonic() - began,  # of time_s: this round's validation
        }
        if reason:
            entry["stop_reason"] = reason
        state.history.append(entry)
        self._save_and_log(improved=improved, curves=state.batch_in_epoch == 0 or bool(reason))
        if self.show_progress:
            write(round_summary(entry, cfg.schedule.epochs))
        self.round_scores = _RoundScores(threshold)
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
        meta = self._meta()
        scored = bool(state.best_scores)
        # With no finite F1 yet there is no best to keep, but a run must still name a best.pt:
        # it follows the latest round and says that it is unscored.
        if improved or not scored:
            best_meta = {**meta, "best_scored": scored}
            save_checkpoint(self.run_dir / "best.pt", self.model, meta=best_meta, overwrite=True)
        resume = resume_entry(
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            scaler=self.step.scaler,
            progress=state,
            elapsed_s=self._elapsed(),
            rng=rng,
            world_size=self.ctx.world_size,
        )
        last = self.run_dir / "last.pt"
        save_checkpoint(last, self.model, meta=meta, overwrite=True, resume=resume)
        if self.log is not None:
            self.log.write(state.history)
        if curves:
            plot_curves(state.history, self.run_dir / "curves.png")

    def _meta(self) -> Mapping[str, Any]:
        """The ``meta`` of both checkpoints: input contract, config, counters, latest scores."""
        state = self.state
        return {
            CONTRACT_KEY: self.contract.to_dict(),  # how this model's input is made
            "source": "dsifn train",
            "training": self.config.to_dict(),
            "epoch": state.epoch,
            "step": state.step,
            "best_f1": state.best_f1,
            "scores": dict(state.history[-1]) if state.history else {},
        }
