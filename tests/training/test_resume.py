"""The resume state: random states and progress as plain values, and their restoring."""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
import torch

from dsifn.distributed import DistContext
from dsifn.errors import CheckpointError
from dsifn.training.resume import (
    Progress,
    capture_rng,
    restore_resume,
    restore_rng,
    resume_entry,
    seed_everything,
)


def _draw():
    return torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)]


def test_rng_states_survive_a_weights_only_round_trip():
    seed_everything(123)
    _draw()
    buffer = io.BytesIO()
    torch.save(capture_rng(), buffer)
    expected = _draw()
    seed_everything(999)  # move every generator elsewhere
    buffer.seek(0)
    restore_rng(torch.load(buffer, weights_only=True))
    got = _draw()
    assert torch.equal(got[0], expected[0])
    assert np.array_equal(got[1], expected[1])
    assert got[2] == expected[2]


def test_early_stopping_counts_rounds_without_f1_gain():
    progress = Progress()
    seen = [progress.observe({"f1": f1}, patience=2) for f1 in (0.1, 0.3, 0.3, math.nan, 0.2)]
    assert seen == [(True, False), (True, False), (False, False), (False, True), (False, True)]
    assert progress.best_f1 == 0.3 and progress.best_scores == {"f1": 0.3}
    assert Progress().observe({"f1": 0.0}, patience=None) == (True, False)


def _optimizer_after_one_step() -> torch.optim.Optimizer:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.Adam([param], lr=0.1)
    param.grad = torch.full((3,), 0.5)
    optimizer.step()
    return optimizer


def _fresh_optimizer() -> torch.optim.Optimizer:
    return torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=0.1)


def test_a_resume_entry_restores_optimizer_progress_and_generators_after_weights_only_load():
    seed_everything(5)
    progress = Progress(epoch=2, batch_in_epoch=1, step=7, history=[{"step": 7, "val_f1": 0.5}])
    progress.observe({"f1": 0.5}, patience=None)
    entry = resume_entry(
        optimizer=_optimizer_after_one_step(),
        scheduler=None,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        progress=progress,
        elapsed_s=12.5,
        rng=[capture_rng()],
        world_size=1,
    )
    expected = _draw()
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    seed_everything(999)
    optimizer = _fresh_optimizer()
    restored = restore_resume(
        saved,
        optimizer=optimizer,
        scheduler=None,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        ctx=DistContext(),
        seed=0,
    )
    assert restored == Progress(
        epoch=2,
        batch_in_epoch=1,
        step=7,
        best_f1=0.5,
        best_epoch=2,
        best_scores={"f1": 0.5},
        elapsed_s=12.5,  # this session's time included
        history=[{"step": 7, "val_f1": 0.5}],
    )
    assert int(optimizer.state_dict()["state"][0]["step"]) == 1
    got = _draw()
    assert torch.equal(got[0], expected[0]) and got[2] == expected[2]


def test_a_resume_state_written_by_another_world_size_warns_and_reseeds():
    entry = resume_entry(
        optimizer=_fresh_optimizer(),
        scheduler=None,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        progress=Progress(step=3),
        elapsed_s=0.0,
        rng=[capture_rng(), capture_rng()],
        world_size=2,
    )
    options = {"scheduler": None, "scaler": torch.amp.GradScaler("cpu", enabled=False)}
    with pytest.warns(UserWarning, match="written by 2 processes, this run has 1"):
        restore_resume(entry, optimizer=_fresh_optimizer(), ctx=DistContext(), seed=4, **options)
    after = torch.rand(3)
    seed_everything(4 + 7919 * 3)
    assert torch.equal(after, torch.rand(3))


def test_an_incomplete_resume_state_is_a_checkpoint_error():
    entry = resume_entry(
        optimizer=_fresh_optimizer(),
        scheduler=None,
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        progress=Progress(),
        elapsed_s=0.0,
        rng=[capture_rng()],
        world_size=1,
    )
    del entry["progress"]["step"]
    with pytest.raises(CheckpointError, match=r"resume state in last\.pt is incomplete"):
        restore_resume(
            entry,
            optimizer=_fresh_optimizer(),
            scheduler=None,
            scaler=torch.amp.GradScaler("cpu", enabled=False),
            ctx=DistContext(),
            seed=0,
        )
