"""One run of a comparison: trained by ``dsifn train``'s engine, then scored and timed.

:func:`train_run` trains (or resumes) a :class:`~dsifn.compare.plan.PlannedRun` through
:func:`dsifn.training.train`: an ordinary run directory, DDP under ``torchrun``.
:func:`score_run` then does, on one process, what a researcher does by hand after training:
the decision threshold tuned on the validation split and stored in ``best.pt``
(:func:`dsifn.evaluation.workflow.prepare_evaluation`, the one evaluation core, as
:func:`dsifn.evaluation.evaluate_checkpoint` runs it), the test split scored with the counts at
every threshold (the precision-recall curve), then with the model it loaded the inference speed
on this machine and the parameter and FLOP counts. :func:`write_result` records it all in the run's
``result.json``, written last and atomically: a run with one is finished.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsifn.benchmark.timing import seconds_per_step
from dsifn.compare.plan import RESULT_FILE, PlannedRun, RunState
from dsifn.data import ChangeDetectionDataset
from dsifn.evaluation.report import write_json
from dsifn.evaluation.workflow import prepare_evaluation
from dsifn.flops import count_parameters, forward_flops
from dsifn.inference.pipeline import normalizer, tile_side
from dsifn.inference.runner import TorchRunner
from dsifn.metrics import ThresholdSweep
from dsifn.models.registry import model_entry
from dsifn.training.engine import Callback, train

__all__ = ["PR_POINTS", "read_result", "score_run", "train_run", "write_result"]

PR_POINTS = 1000  # thresholds k / 1000 at which result.json keeps the test counts
_ROUNDS = 5  # timed rounds of inference; the median counts


def train_run(
    run: PlannedRun,
    state: RunState,
    *,
    progress: bool,
    callbacks: Sequence[Callback] = (),
) -> None:
    """Train ``run`` to its budget: from the start, or on from its ``last.pt``.

    A run whose training had finished (interrupted while it was being scored) resumes to find
    its budget spent, and stops at once.
    """
    train(
        run.config,
        run.run_dir,
        resume=state == "resume",
        overwrite=state == "restart",
        progress=progress,
        callbacks=callbacks,
    )


def score_run(run: PlannedRun, *, processes: int = 1, progress: bool) -> dict[str, Any]:
    """Tune, score and time a trained run; its ``result.json`` record.

    Args:
        run: The trained run.
        processes: How many processes trained it (``torchrun``'s world size).
        progress: Show progress bars.

    Returns:
        ``model``, ``seed``, ``config``, the test ``scores`` and ``counts`` at the threshold
        tuned on val (``threshold``, ``val_f1``) and each test pair's counts (``per_image``:
        name to tp, fp, fn, tn), ``pr`` (test counts at thresholds k / :data:`PR_POINTS`),
        ``parameters``, ``flops_per_pair`` and ``flops_size``, and the ``training`` and
        ``inference`` speeds.
    """
    cfg = run.config
    prepared = prepare_evaluation(
        run.run_dir / "best.pt",
        cfg.data.root,
        split="test",
        layout=cfg.data.layout,
        tune=True,
        device=cfg.run.device,
        precision=cfg.run.precision,
    )
    sweep = ThresholdSweep(bins=PR_POINTS)
    found = prepared.run(
        batch_size=cfg.validation.batch_size, per_image=True, progress=progress, sweep=sweep
    )
    assert found.tuned is not None
    threshold, val_scores = found.tuned
    prepared.store_tuned(threshold)
    result = found.result
    # The model as loaded once: storing the threshold rewrites best.pt's contract only.
    runner = prepared.runner
    assert isinstance(runner, TorchRunner)  # best.pt is a dsifn checkpoint: torch runs it
    side = _tile(runner, prepared.dataset)
    total, _ = count_parameters(runner.model)
    return {
        "model": run.model,
        "title": model_entry(run.model).title,
        "seed": run.seed,
        "config": cfg.to_dict(),
        "threshold": threshold,
        "val_f1": val_scores["f1"],
        "scores": dict(result.scores),
        "counts": {"tp": result.tp, "fp": result.fp, "fn": result.fn, "tn": result.tn},
        "test_pairs": found.pairs,
        "per_image": {r.name: [r.tp, r.fp, r.fn, r.tn] for r in result.per_image or ()},
        "pr": _pr_counts(sweep),
        "parameters": total,
        "flops_per_pair": forward_flops(runner.model, side, bands=runner.contract.band_count),
        "flops_size": side,
        "training": training_speed(
            _history(run.run_dir), cfg.run.batch_size * cfg.optim.accumulate * processes
        ),
        "inference": inference_speed(runner, side, batch=cfg.run.batch_size),
    }


def _tile(runner: TorchRunner, test: ChangeDetectionDataset) -> int:
    """The side of the tiles ``dsifn predict`` gives the model, or of the test images if smaller.

    Speeds and FLOPs are given for square pairs of this side.
    """
    height, width = (int(n) for n in test[0]["image"].shape[-2:])
    return min(tile_side(runner.tile_size, None, runner.contract.tile_size), height, width)


def _pr_counts(sweep: ThresholdSweep) -> dict[str, list[float] | list[int]]:
    """Test counts at thresholds 0, 1/1000 ... 1: enough for a precision-recall curve."""
    rows = sweep.confusion()
    return {
        "thresholds": sweep.thresholds,
        "tp": [r[0] for r in rows],
        "fp": [r[1] for r in rows],
        "fn": [r[2] for r in rows],
        "tn": [r[3] for r in rows],
    }


def _history(run_dir: Path) -> list[dict[str, Any]]:
    """The run's validation rounds, as ``metrics.jsonl`` records them."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def training_speed(history: Sequence[Mapping[str, Any]], pairs_per_step: int) -> dict[str, Any]:
    """Steps, pairs and pairs per second of training, validation rounds excluded.

    Args:
        history: The run's rounds (``step``, ``time_s``: training time so far, ``val_s``: the
            round's validation seconds).
        pairs_per_step: Pairs of one optimiser step (batch x accumulation x processes).

    Returns:
        ``steps``, ``pairs`` (steps x pairs_per_step: an epoch's short last batch counts
        whole), ``seconds`` (training time less validation) and ``pairs_per_second``, with
        ``stop_reason``.
    """
    last = history[-1]
    steps = int(last["step"])
    seconds = float(last["time_s"]) - sum(float(e.get("val_s") or 0.0) for e in history)
    pairs = steps * pairs_per_step
    return {
        "steps": steps,
        "pairs": pairs,
        "seconds": seconds,
        "pairs_per_second": pairs / seconds if seconds > 0 else math.nan,
        "stop_reason": last.get("stop_reason", ""),
    }


def inference_speed(runner: TorchRunner, side: int, *, batch: int) -> dict[str, Any]:
    """Pairs per second of the model on this machine, as ``dsifn predict`` runs it.

    ``batch`` pairs of ``side`` x ``side`` random tiles (the speed of a convolutional network
    does not depend on the pixels), warmed up once, then timed in :data:`_ROUNDS` rounds of
    about half a second; the median round counts, so a burst of other load on the machine
    moves it less.
    """
    generator = torch.Generator().manual_seed(0)
    bands = runner.contract.band_count
    tiles = torch.rand(2, batch, bands, side, side, generator=generator).numpy()
    norm = normalizer(runner)
    t1, t2 = norm(list(tiles[0])), norm(list(tiles[1]))
    began = time.perf_counter()
    runner(t1, t2)  # warm-up: first calls allocate (and cuDNN chooses its kernels)
    once = max(time.perf_counter() - began, 1e-6)
    steps = int(np.clip(math.ceil(0.5 / once), 1, 20))
    rounds = [
        seconds_per_step(lambda: runner(t1, t2), steps, runner.device) for _ in range(_ROUNDS)
    ]
    seconds = statistics.median(rounds)
    return {
        "pairs_per_second": batch / seconds,
        "batch": batch,
        "size": side,
        "device": str(runner.device),
        "precision": runner.precision,
    }


def write_result(run: PlannedRun, record: Mapping[str, Any]) -> Path:
    """Write ``result.json`` atomically: from now on the run counts as finished."""
    return write_json(run.run_dir / RESULT_FILE, record, overwrite=True)


def read_result(run: PlannedRun) -> dict[str, Any]:
    """A finished run's record."""
    record: dict[str, Any] = json.loads((run.run_dir / RESULT_FILE).read_text())
    return record
