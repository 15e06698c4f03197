"""What a comparison runs: the settings, and one training run per network and seed.

:class:`CompareSettings` holds what ``dsifn compare`` is asked (networks, seeds, the budget,
the pairs its page shows); :func:`plan_runs` turns a base training configuration into one
:class:`PlannedRun` per (network, seed): the same data, validation and recipe, the network
switched (:func:`dsifn.training.config.switch_model`), the seed set and the run's length
replaced by the budget. Same data and seed give every network the same crops in the same
order (the order is a function of the seed and epoch, the augmentation of seed, epoch and
index), so a faster network sees more of them in the same minutes, never other ones.

:func:`run_state` says what a run directory holds: nothing, a run to resume, a finished run,
or a run of another configuration (refused unless overwriting).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from dsifn._validation import check_choice
from dsifn.errors import ConfigError, OutputExistsError
from dsifn.models.registry import MODEL_NAMES
from dsifn.training.config import TrainConfig, load_config, switch_model

__all__ = [
    "RESULT_FILE",
    "CompareSettings",
    "PlannedRun",
    "RunState",
    "plan_runs",
    "run_state",
]

RESULT_FILE = "result.json"  # written last by a finished run: its scores and timings
EPOCHS = 1_000_000  # the schedule's epoch bound when a budget ends the runs
RunState = Literal["new", "resume", "restart", "done"]


@dataclass(frozen=True)
class CompareSettings:
    """What ``dsifn compare`` is asked to compare, and for how long."""

    models: tuple[str, ...] = MODEL_NAMES  # model.name of each network, in the table's order
    seeds: tuple[int, ...] = (0,)  # one run per network and seed
    minutes: float | None = None  # wall-clock training budget of each run
    steps: int | None = None  # or: optimiser steps of each run
    pairs: int = 4  # test pairs the page shows predicted by every network

    def __post_init__(self) -> None:
        """Check values; messages quote the parameter (the command line writes its flag)."""
        if not self.models:
            raise ConfigError("`models` names no network")
        for name in self.models:
            check_choice("`models`", name, MODEL_NAMES)
        for what, values in (("models", self.models), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ConfigError(f"`{what}` names one twice: {','.join(map(str, values))}")
        if not self.seeds:
            raise ConfigError("`seeds` names no seed")
        if (self.minutes is None) == (self.steps is None):
            raise ConfigError(
                "give each run the same budget: `minutes=M` of training or `steps=N`, one of them"
            )
        if self.minutes is not None and not self.minutes > 0:
            raise ConfigError(f"`minutes` must be positive; got {self.minutes}")
        if self.steps is not None and self.steps < 1:
            raise ConfigError(f"`steps` must be at least 1; got {self.steps}")
        if self.pairs < 0:
            raise ConfigError(f"`pairs` must not be negative; got {self.pairs}")

    def budget(self) -> str:
        """The budget in words: ``"10 minutes"``, ``"500 steps"``."""
        if self.minutes is not None:
            return f"{self.minutes:g} minutes"
        return f"{self.steps} steps"


@dataclass(frozen=True)
class PlannedRun:
    """One training run of the comparison."""

    model: str  # its model.name
    seed: int  # run.seed
    run_dir: Path  # an ordinary training run directory
    config: TrainConfig  # what it trains

    @property
    def label(self) -> str:
        """``fc_ef-s0``: the run's folder name."""
        return self.run_dir.name


def plan_runs(base: TrainConfig, settings: CompareSettings, out: Path) -> list[PlannedRun]:
    """One run per seed and network, seed by seed (early results cover every network).

    Args:
        base: The recipe: data, loss, optimiser, validation, run settings, and the model
            section of the network it names (the others start from their training defaults,
            with its band count and normalisation).
        settings: Networks, seeds and budget.
        out: The comparison's folder; runs go to ``out/runs/<model>-s<seed>``.
    """
    # The budget ends every run: an epoch has at least one optimiser step, so N steps end
    # within N epochs; minutes need a bound no run reaches.
    epochs = settings.steps or EPOCHS
    schedule = dataclasses.replace(
        base.schedule, epochs=epochs, max_minutes=settings.minutes, max_steps=settings.steps
    )
    runs = []
    for seed in settings.seeds:
        for name in settings.models:
            config = dataclasses.replace(
                switch_model(base, name),
                schedule=schedule,
                run=dataclasses.replace(base.run, seed=seed),
            )
            runs.append(PlannedRun(name, seed, out / "runs" / f"{name}-s{seed}", config))
    return runs


def run_state(run: PlannedRun, *, overwrite: bool) -> RunState:
    """What to do with a run's folder: start, resume, start again, or nothing (it is done).

    A folder holding a run of another configuration (another budget, data or recipe) is
    started again only when overwriting.

    Raises:
        OutputExistsError: If the folder holds another configuration's run and ``overwrite``
            is false.
    """
    folder = run.run_dir
    if not folder.is_dir() or not any(folder.iterdir()):
        return "new"
    recorded = _recorded_config(folder)
    if recorded != run.config:
        if not overwrite:
            raise OutputExistsError(
                f"{folder} holds a run of another configuration than this comparison's; pass "
                "`overwrite=True` to run it again, or compare into another folder"
            )
        return "restart"
    if (folder / RESULT_FILE).is_file():
        return "done"
    return "resume" if (folder / "last.pt").is_file() else "restart"


def _recorded_config(folder: Path) -> TrainConfig | None:
    """The configuration a run folder records (its result's, else its config.yaml), if any."""
    result = folder / RESULT_FILE
    try:
        if result.is_file():
            return TrainConfig.from_dict(json.loads(result.read_text())["config"])
        if (folder / "config.yaml").is_file():
            return load_config(folder / "config.yaml")
    except (ConfigError, KeyError, ValueError):
        return None  # unreadable: another configuration's, for all we know
    return None
