"""FLOPs of a training step, counted on a real step, against the forward's."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dsifn.benchmark import training_step_flops
from dsifn.flops import forward_flops
from dsifn.models import DSIFN


def _encoder_flops(model: DSIFN, size: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.encoder(torch.zeros(2, 3, size, size))  # both dates go through one trunk
    return int(counter.get_total_flops())


@pytest.mark.parametrize("frozen", [False, True])
def test_training_step_flops_against_the_forward(frozen):
    torch.manual_seed(0)
    model = DSIFN(freeze_encoder=frozen).train()
    size = 32
    t1, t2 = torch.randn(2, 1, 3, size, size).unbind(0)
    target = (torch.rand(1, 1, size, size) > 0.5).float()
    step = training_step_flops(model, (t1, t2, target))
    forward = forward_flops(model, size)
    assert model.training  # left as it was
    assert all(p.grad is None for p in model.parameters())
    if not frozen:
        # Backward costs two forwards (input and weight gradients): a step is about 3x.
        assert step / forward == pytest.approx(3.0, rel=0.02)
    else:
        # A frozen trunk gets no backward: forward + twice the decoder's forward.
        decoder = forward - _encoder_flops(model, size)
        assert step / (forward + 2 * decoder) == pytest.approx(1.0, rel=0.03)
