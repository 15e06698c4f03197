"""The resume state: what ``last.pt`` records so that a run continues as if never stopped.

``last.pt`` is a normal dsifn checkpoint with one more top-level entry, ``resume``::

    {"optimizer": optimizer.state_dict(), "scheduler": ... or None, "scaler": ...,
     "progress": Progress.to_dict(), "rng": [generator states, one per process by rank],
     "world_size": processes that wrote it}

Every value is plain (tensors, numbers, strings, lists, dicts), so the file loads with
``torch.load(weights_only=True)``; NumPy's and Python's generator states, which hold a NumPy
array and a tuple, are converted to such values and back here. With the data order a pure
function of (seed, epoch) and the augmentation of (seed, epoch, index), this is all a resumed
run needs to repeat what the uninterrupted run would have done.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dsifn.distributed import DistContext
from dsifn.errors import CheckpointError
from dsifn.io.atomic import check_input_file
from dsifn.models.checkpoint import read_checkpoint

__all__ = [
    "Progress",
    "capture_rng",
    "read_resume",
    "restore_resume",
    "restore_rng",
    "resume_entry",
    "seed_everything",
]


@dataclass
class Progress:
    """Where a run stands: the counters and history that a resume restores."""

    epoch: int = 0  # epochs completed
    batch_in_epoch: int = 0  # batches of the current epoch consumed
    step: int = 0  # optimiser steps taken
    best_f1: float = -math.inf  # best validation F1 so far
    best_epoch: int = 0  # `epoch` at the best round
    best_scores: dict[str, float] = field(default_factory=dict)
    rounds_since_best: int = 0  # validation rounds without F1 gain (early stopping)
    elapsed_s: float = 0.0  # training time spent in earlier sessions of this run
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per round

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
        """Plain values, as ``resume["progress"]`` holds them."""
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
    def from_dict(cls, values: Mapping[str, Any]) -> Progress:
        """The progress that :meth:`to_dict` wrote (a missing key raises ``KeyError``)."""
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


def read_resume(run_dir: Path) -> dict[str, Any]:
    """The checkpoint ``run_dir/last.pt``, checked to hold a resume state.

    Raises:
        CheckpointError: If there is no ``last.pt``, or it holds no ``resume`` entry.
    """
    last = run_dir / "last.pt"
    if not last.exists():
        raise CheckpointError(f"nothing to resume: {last} does not exist")
    check_input_file(last, "resume checkpoint", CheckpointError)  # a folder named last.pt
    payload = read_checkpoint(last)
    if not isinstance(payload.get("resume"), Mapping):
        raise CheckpointError(f"{last} holds no resume state (was it written by dsifn train?)")
    return payload


def resume_entry(
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    progress: Progress,
    elapsed_s: float,
    rng: list[dict[str, Any]],
    world_size: int,
) -> dict[str, Any]:
    """The ``resume`` entry of ``last.pt`` (see the module docstring).

    Args:
        optimizer: The run's optimiser.
        scheduler: Its learning-rate schedule, or None.
        scaler: The gradient scaler.
        progress: Where the run stands.
        elapsed_s: Training time of the run so far, this session's included.
        rng: Every process's :func:`capture_rng`, by rank.
        world_size: How many processes train.
    """
    counters = progress.to_dict()
    counters["elapsed_s"] = elapsed_s
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "progress": counters,
        "rng": rng,
        "world_size": world_size,
    }


def restore_resume(
    saved: Mapping[str, Any],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    ctx: DistContext,
    seed: int,
) -> Progress:
    """Load a :func:`resume_entry` into the run's objects and this process's generators.

    A run resumed on another number of processes continues, but not bit for bit: its random
    states restart from ``seed`` (with a warning).

    Returns:
        Where the run stood.

    Raises:
        CheckpointError: If the entry is incomplete.
    """
    try:
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None and saved.get("scheduler") is not None:
            scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        progress = Progress.from_dict(saved["progress"])
        rng_states = list(saved["rng"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"the resume state in last.pt is incomplete: {exc}") from exc
    if len(rng_states) == ctx.world_size:
        restore_rng(rng_states[ctx.rank])
    else:
        warnings.warn(
            f"last.pt was written by {len(rng_states)} processes, this run has "
            f"{ctx.world_size}: random states restart from the seed, so the run "
            "continues but not bit for bit",
            stacklevel=3,
        )
        seed_everything(seed + 7919 * progress.step + ctx.rank)
    return progress


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (all devices) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng() -> dict[str, Any]:
    """The global generators' states as plain values (see :func:`restore_rng`)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": int(version), "internal": list(internal), "gauss_next": gauss_next},
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put the global generators back in a state from :func:`capture_rng`.

    Raises:
        CheckpointError: If the state is incomplete.
    """
    try:
        torch.set_rng_state(state["torch"])
        np_state = state["numpy"]
        np.random.set_state(
            (
                np_state["kind"],
                np_state["keys"].numpy().astype(np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached_gaussian"],
            )
        )
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))
        cuda = list(state.get("cuda", []))
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(
            f"the resume state's random-generator states are incomplete: {exc}"
        ) from exc
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
