"""``dsifn demo``: the whole workflow on synthetic data, on a CPU, within a time budget.

Steps: write a synthetic bi-temporal dataset (:mod:`dsifn.data.synthetic`) in the LEVIR-CD
layout; train a DSIFN on it with :func:`dsifn.training.engine.train` until the training share
of the budget is spent (the best validation checkpoint is kept); choose its decision threshold
on the validation split; evaluate it on the test split with per-image pictures and an HTML
report; and score a pixel-difference baseline (mean absolute difference of the dates over the
bands, threshold chosen on the same validation split) on the same test split for comparison.

No pretrained weights can be downloaded offline, so the VGG16 encoder starts from random weights
and is trained with the decoder, without dropout (why: benchmarks/RESULTS.md, "The demo's
training recipe"). The time left for training is what the budget leaves after the data is
written and a measured reserve for the evaluation that follows, so the demo ends within its
budget on a busy machine too (with fewer steps).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dsifn.data import ChangeDetectionDataset, DataConfig
from dsifn.data.synthetic import SyntheticConfig, write_synthetic_dataset
from dsifn.devices import resolve_device, resolve_precision
from dsifn.errors import ConfigError, OutputExistsError
from dsifn.evaluation.report import ReportWriter, write_json
from dsifn.evaluation.results import EvaluationResult, format_table
from dsifn.evaluation.scoring import (
    difference_scores,
    evaluate,
    evaluate_scorer,
    sweep_scorer,
    tune_threshold,
)
from dsifn.evaluation.workflow import store_threshold
from dsifn.models.checkpoint import load_checkpoint
from dsifn.models.dsifn import DSIFN, DSIFNConfig
from dsifn.models.registry import ChangeNetwork
from dsifn.training.config import (
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    ValidationConfig,
)
from dsifn.training.engine import train

__all__ = ["DemoConfig", "DemoResult", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and budget of the demo; the defaults fit 10 minutes on 2 CPU cores."""

    minutes: float = 10.0  # budget of the whole demo: data, training, evaluation
    train_share: float = 0.8  # at most this part of the time left after writing the data trains
    size: int = 48  # side of the synthetic images in pixels
    train_pairs: int = 240  # synthetic pairs in the train split
    val_pairs: int = 32  # synthetic pairs in the val split (checkpoint choice, thresholds)
    test_pairs: int = 48  # synthetic pairs in the test split (the reported scores)
    batch_size: int = 4  # training pairs per optimiser step (small: more updates per CPU second)
    lr: float = 1e-3  # Adam learning rate (the decoder trains from scratch)
    validate_every: int = 15  # optimiser steps between validation rounds (points of the curves)
    max_steps: int | None = None  # optional cap on optimiser steps (tests use a few)
    seed: int = 0  # seeds the data, the weights and the data order
    device: str = "auto"  # auto, cpu, cuda or cuda:N

    def __post_init__(self) -> None:
        """Check values."""
        if self.minutes <= 0:
            raise ConfigError(f"the demo's budget must be positive; got {self.minutes} minutes")
        if not 0 < self.train_share < 1:
            raise ConfigError(f"train_share must be in (0, 1); got {self.train_share}")
        if min(self.train_pairs, self.val_pairs, self.test_pairs) < 1:
            raise ConfigError("the demo needs at least one pair in each split")
        if self.batch_size < 1 or self.lr <= 0 or self.validate_every < 1:
            raise ConfigError("the demo's batch_size, lr and validate_every must be positive")


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced."""

    out: Path  # the demo folder
    checkpoint: Path  # the trained model (best validation F1), with its tuned threshold
    report: Path  # report.html
    dsifn: EvaluationResult  # DSIFN on the test split
    baseline: EvaluationResult  # pixel-difference baseline on the test split
    train_seconds: float  # time spent in training
    total_seconds: float  # time of the whole demo
    stop_reason: str  # why training stopped ("time_limit", "max_steps", "epochs", ...)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{out} is not empty; pass `overwrite=True` to replace the demo there"
        )


def run_demo(
    out: str | os.PathLike[str],
    config: DemoConfig | None = None,
    *,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the demo into folder ``out``.

    Files: ``data/`` (the synthetic dataset), ``run/`` (training: ``best.pt``, ``last.pt``,
    ``curves.png``, ``metrics.jsonl``, ``config.yaml``), ``metrics.json`` (both methods' test
    scores), ``report.html`` with ``masks/``, ``errors/`` and ``report/`` pictures.

    Args:
        out: Demo folder.
        config: Sizes and budget; defaults to :class:`DemoConfig`'s.
        overwrite: Replace an earlier demo in ``out``.
        progress: Show progress bars.
        log: Where the step messages go.

    Returns:
        Paths, scores of DSIFN and of the baseline on the test split, and timings.

    Raises:
        OutputExistsError: If ``out`` holds files and ``overwrite`` is false.
    """
    run = _Run(config or DemoConfig(), Path(out), overwrite, progress, log)
    _check_out(run.root, overwrite)
    log(f"[1/4] writing a synthetic dataset to {run.root / 'data'}")
    data_root = _write_data(run)
    trained = _train(run, data_root)
    log("[3/4] choosing thresholds on the validation split")
    data = DataConfig(root=str(data_root), layout="levir")
    model = load_checkpoint(trained.checkpoint)
    thresholds = _thresholds(run, model, ChangeDetectionDataset(data, "val"), trained.checkpoint)
    log("[4/4] evaluating both on the test split")
    test = ChangeDetectionDataset(data, "test")
    return _evaluate_both(run, model, test, thresholds, trained)


@dataclass
class _Run:
    """One demo run: its settings, where it writes, and where and how it computes."""

    cfg: DemoConfig
    root: Path
    overwrite: bool
    progress: bool
    log: Callable[[str], None]
    start: float = dataclasses.field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.cfg.device)
        self.precision = resolve_precision("auto", self.device)


@dataclass(frozen=True)
class _Trained:
    """What the training step left: the best checkpoint and how the training went."""

    checkpoint: Path
    seconds: float
    steps: int
    validations: int
    stop_reason: str


def _write_data(run: _Run) -> Path:
    cfg = run.cfg
    synthetic = SyntheticConfig(
        size=cfg.size, train=cfg.train_pairs, val=cfg.val_pairs, test=cfg.test_pairs
    )
    return write_synthetic_dataset(
        run.root / "data", synthetic, seed=cfg.seed, overwrite=run.overwrite, progress=run.progress
    )


def _train(run: _Run, data_root: Path) -> _Trained:
    """Train for what the budget leaves after the data and a reserve for the evaluation."""
    cfg = run.cfg
    left = 60.0 * cfg.minutes - (time.monotonic() - run.start)
    reserve = _evaluation_reserve(cfg, run.device)
    minutes = max(min(cfg.train_share * left, left - reserve), 3.0) / 60.0
    run.log(
        f"[2/4] training DSIFN on {run.device.type} for at most {minutes:.1f} minutes "
        f"({cfg.train_pairs} pairs of "
        f"{cfg.size}x{cfg.size}, VGG16 encoder from random weights, "
        f"{reserve / 60:.1f} minutes kept for evaluation)"
    )
    began = time.monotonic()
    result = train(
        _train_config(cfg, str(data_root), minutes),
        run.root / "run",
        overwrite=run.overwrite,
        progress=run.progress,
    )
    trained = _Trained(
        checkpoint=result.best_checkpoint,
        seconds=time.monotonic() - began,
        steps=int(result.history[-1]["step"]) if result.history else 0,
        validations=len(result.history),
        stop_reason=result.stop_reason,
    )
    run.log(
        f"      stopped after {trained.steps} steps in {trained.seconds / 60:.1f} minutes "
        f"({trained.stop_reason}); best validation F1 "
        f"{100 * result.best_scores.get('f1', float('nan')):.2f} % at threshold 0.5"
    )
    return trained


def _thresholds(
    run: _Run, model: ChangeNetwork, val: ChangeDetectionDataset, checkpoint: Path
) -> tuple[float, float]:
    """The F1-best thresholds of DSIFN (stored in its checkpoint) and of the baseline."""
    batch = run.cfg.batch_size
    threshold, _ = tune_threshold(
        model,
        val,
        device=run.device,
        precision=run.precision,
        batch_size=batch,
        progress=run.progress,
    )
    store_threshold(checkpoint, threshold, note="F1-best on the demo's val split")
    baseline, _ = sweep_scorer(difference_scores, val, batch_size=batch, progress=False)
    run.log(f"      DSIFN threshold {threshold:.3f}, pixel-difference threshold {baseline:.3f}")
    return threshold, baseline


def _evaluate_both(
    run: _Run,
    model: ChangeNetwork,
    test: ChangeDetectionDataset,
    thresholds: tuple[float, float],
    trained: _Trained,
) -> DemoResult:
    """Score DSIFN and the baseline on the test split; write the report and ``metrics.json``."""
    writer = ReportWriter(run.root, report=True, overwrite=run.overwrite)
    result = evaluate(
        model,
        test,
        threshold=thresholds[0],
        device=run.device,
        precision=run.precision,
        batch_size=run.cfg.batch_size,
        progress=run.progress,
        per_image=True,
        on_prediction=writer,
    )
    baseline = evaluate_scorer(
        difference_scores,
        test,
        threshold=thresholds[1],
        batch_size=run.cfg.batch_size,
        progress=False,
    )
    report = _write_report(run, writer, result, baseline, trained)
    total = time.monotonic() - run.start
    summary: dict[str, Any] = {
        "dsifn": result.to_dict(),
        "pixel_difference": baseline.to_dict(),
        "train_seconds": trained.seconds,
        "total_seconds": total,
        "stop_reason": trained.stop_reason,
        "train_steps": trained.steps,
        "config": dataclasses.asdict(run.cfg),
    }
    write_json(run.root / "metrics.json", summary, overwrite=run.overwrite)
    _log_scores(run, result, baseline, trained.steps, total)
    run.log(f"report: {report}")
    return DemoResult(
        out=run.root,
        checkpoint=trained.checkpoint,
        report=report,
        dsifn=result,
        baseline=baseline,
        train_seconds=trained.seconds,
        total_seconds=total,
        stop_reason=trained.stop_reason,
    )


def _write_report(
    run: _Run,
    writer: ReportWriter,
    result: EvaluationResult,
    baseline: EvaluationResult,
    trained: _Trained,
) -> Path:
    cfg = run.cfg
    curves = run.root / "run/curves.png"
    return writer.write_html(
        result,
        title="dsifn demo: synthetic bi-temporal data",
        details={
            "data": f"{cfg.train_pairs}/{cfg.val_pairs}/{cfg.test_pairs} synthetic pairs of "
            f"{cfg.size}x{cfg.size} (train/val/test), seed {cfg.seed}",
            "training": f"{trained.seconds / 60:.1f} minutes on {run.device.type}, "
            f"{trained.steps} steps, {trained.validations} validation round(s), "
            f"stop: {trained.stop_reason}",
            "checkpoint": "run/best.pt",
        },
        figures=[("training curves", "run/curves.png")] if curves.is_file() else [],
        comparison=[("pixel difference |T2 - T1|", baseline)],
    )


def _log_scores(
    run: _Run, result: EvaluationResult, baseline: EvaluationResult, steps: int, total: float
) -> None:
    run.log(format_table(result, title="DSIFN on the test split"))
    run.log(format_table(baseline, title="pixel difference |T2 - T1| on the test split"))
    run.log(
        f"test F1: DSIFN {100 * result.scores['f1']:.2f} %  vs  pixel difference "
        f"{100 * baseline.scores['f1']:.2f} %   ({total / 60:.1f} minutes in all)"
    )
    margin = result.scores["f1"] - baseline.scores["f1"]
    if margin < 0.1:
        run.log(
            f"note: DSIFN is only {100 * margin:.1f} F1 points above the baseline after {steps} "
            "training steps; on a busy or slow machine give it more time (`minutes`)"
        )


def _evaluation_reserve(cfg: DemoConfig, device: torch.device) -> float:
    """Seconds to keep for what follows training, from a timed forward pass on this machine.

    After the time limit, training finishes its step and validates once; then the validation
    split is scored again (thresholds) and the test split once, and checkpoints are written and
    read. Timing a forward pass now measures how fast this machine is at present (it may be
    shared), with a margin of 1.5 for the backward pass of the last step and for load changes.
    """
    model = DSIFN(encoder_weights=None, dropout=0.0).to(device).eval()
    pairs = torch.rand(cfg.batch_size, 3, cfg.size, cfg.size, device=device)
    with torch.inference_mode():
        model(pairs, pairs)  # warm-up: first calls allocate
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        began = time.monotonic()
        model(pairs, pairs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    per_pair = (time.monotonic() - began) / cfg.batch_size
    scored = 2 * cfg.val_pairs + cfg.test_pairs + 3 * cfg.batch_size
    return 1.5 * per_pair * scored + 30.0  # 30 s: checkpoints written and read, pictures


def _train_config(cfg: DemoConfig, data_root: str, minutes: float) -> TrainConfig:
    """The demo's training run: small tiles, trainable encoder, no dropout, constant Adam rate."""
    return TrainConfig(
        model=DSIFNConfig(encoder_weights=None, freeze_encoder=False, dropout=0.0),
        data=DataConfig(root=data_root, layout="levir"),
        optim=OptimConfig(optimizer="adam", lr=cfg.lr),
        schedule=ScheduleConfig(
            epochs=1000,  # the time budget ends the run
            max_steps=cfg.max_steps,
            max_minutes=minutes,
            scheduler="constant",
            early_stop_patience=None,
        ),
        validation=ValidationConfig(batch_size=cfg.batch_size, every_steps=cfg.validate_every),
        run=RunConfig(
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            num_workers=0,  # 64-pixel PNGs decode faster than worker processes start
            device=cfg.device,
            tensorboard=False,
        ),
    )
