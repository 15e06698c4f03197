"""Optimisers and learning-rate schedules from their config sections, without training."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsifn.training.config import OptimConfig, ScheduleConfig
from dsifn.training.optim import build_optimizer, build_scheduler


def _optimizer(name="adam"):
    return build_optimizer([nn.Parameter(torch.zeros(2))], OptimConfig(optimizer=name, lr=1.0))


def test_plateau_lowers_the_rate_at_the_patience_th_round_without_gain():
    optimizer = _optimizer()
    scheduler = build_scheduler(optimizer, ScheduleConfig(plateau_patience=3))
    rates = []
    for f1 in (0.5, 0.6, 0.6, 0.59, 0.6, 0.6, 0.61):
        scheduler.step(f1)
        rates.append(optimizer.param_groups[0]["lr"])
    # Gains at rounds 1, 2 and 7; rounds 3, 4, 5 are the 3 in a row without gain.
    assert rates == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1])


def test_cosine_reaches_min_lr_after_all_epochs_and_constant_is_none():
    optimizer = _optimizer("sgd")
    scheduler = build_scheduler(
        optimizer, ScheduleConfig(scheduler="cosine", epochs=4, min_lr=0.01)
    )
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert build_scheduler(_optimizer("adamw"), ScheduleConfig(scheduler="constant")) is None


@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_fused_adam_only_where_asked_or_on_cuda_and_it_updates_alike(name):
    def run(fused):
        torch.manual_seed(0)
        param = nn.Parameter(torch.randn(64))
        start = param.detach().clone()
        optimizer = build_optimizer([param], OptimConfig(optimizer=name, lr=0.1), fused=fused)
        for _ in range(3):
            param.grad = torch.sin(param.detach() * 3.0)
            optimizer.step()
        assert not torch.allclose(param.detach(), start)  # the steps did move it
        return optimizer, param.detach()

    auto, loop_result = run(None)  # CPU parameters: not fused
    assert not auto.defaults["fused"]
    fused, fused_result = run(True)
    assert fused.defaults["fused"] is True
    torch.testing.assert_close(fused_result, loop_result)
