"""The one training step: what it computes, accumulation, layout, the finite-loss check."""

from __future__ import annotations

import copy

import pytest
import torch

from dsifn.errors import DSIFNError
from dsifn.losses import DeepSupervisionLoss
from dsifn.models import DSIFN
from dsifn.training.config import LossConfig, OptimConfig
from dsifn.training.step import TrainStep, resolve_channels_last

CPU = torch.device("cpu")
SIZE = 32


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return DSIFN(encoder_weights=None, dropout=0.0).train()


def batch(seed: int, pairs: int = 2) -> dict:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(pairs, 2, 3, SIZE, SIZE, generator=generator)
    mask = (torch.rand(pairs, 1, SIZE, SIZE, generator=generator) > 0.7).float()
    valid = torch.rand(pairs, 1, SIZE, SIZE, generator=generator) > 0.1
    return {"image": image, "mask": mask, "valid": valid, "name": ["a", "b"][:pairs]}


def make_step(net, **options) -> TrainStep:
    optim = options.pop("optim", OptimConfig(lr=1e-3))
    options.setdefault("precision", "fp32")
    return TrainStep(copy.deepcopy(net), loss=LossConfig(), optim=optim, device=CPU, **options)


def test_a_step_is_normalise_forward_loss_backward_adam(net):
    step = make_step(net, channels_last=False)
    data = batch(0)
    out = step(data)
    assert out.stepped

    # The same step written out by hand.
    plain = copy.deepcopy(net)
    params = [p for p in plain.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-3)
    norm = plain.config.input_normalization
    outputs = plain(norm(data["image"][:, 0]), norm(data["image"][:, 1]))
    loss = DeepSupervisionLoss()(outputs, data["mask"], data["valid"])
    loss.backward()
    optimizer.step()

    assert torch.equal(out.loss, loss.detach())
    assert torch.equal(out.logits, outputs.stride1.detach())
    expected, got = plain.state_dict(), step.model.state_dict()
    assert [k for k in expected if not torch.equal(expected[k], got[k])] == []


def test_accumulation_steps_after_n_batches_or_when_flushed(net):
    step = make_step(net, optim=OptimConfig(lr=1e-3, accumulate=3))
    start = copy.deepcopy(step.model.state_dict())
    head = "heads.0.weight"
    assert [step(batch(i)).stepped for i in range(2)] == [False, False]
    assert torch.equal(step.model.state_dict()[head], start[head])  # gradients only gathered
    assert step.optimizer.state == {}
    assert step(batch(2)).stepped  # the third
    assert not torch.equal(step.model.state_dict()[head], start[head])
    assert not step(batch(3)).stepped
    assert step(batch(4), flush=True).stepped  # an epoch's end, after two
    assert next(iter(step.optimizer.state.values()))["step"] == 2


def test_gradient_clipping_bounds_the_step(net):
    # SGD without momentum moves the weights by lr * grad: the clipped norm shows in the move.
    def moved(grad_clip):
        sgd = OptimConfig(optimizer="sgd", lr=1.0, momentum=0.0, grad_clip=grad_clip)
        step = make_step(net, optim=sgd)
        before = [p.detach().double() for p in step.params]
        step(batch(0))
        after = [p.detach().double() for p in step.params]
        return torch.cat([(a - b).flatten() for a, b in zip(after, before, strict=True)])

    free = moved(None).norm().item()
    assert moved(free / 10).norm().item() == pytest.approx(free / 10, rel=1e-3)


def test_channels_last_layout_of_inputs_and_weights(net):
    step = make_step(net, channels_last=True)
    t1, t2, mask, valid = step.inputs(batch(0))
    assert mask.shape == valid.shape == (2, 1, SIZE, SIZE) and valid.dtype == torch.bool
    assert t1.is_contiguous(memory_format=torch.channels_last)
    assert t2.is_contiguous(memory_format=torch.channels_last)
    conv = step.model.encoder.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    nchw = make_step(net, channels_last=False)
    assert not nchw.inputs(batch(0))[0].is_contiguous(memory_format=torch.channels_last)
    # Same numbers either way, up to rounding.
    torch.testing.assert_close(step(batch(1)).loss, nchw(batch(1)).loss, rtol=1e-5, atol=1e-6)


def test_automatic_layout():
    # NHWC where it was measured faster: CUDA and the CPU; NCHW on unmeasured devices.
    assert resolve_channels_last(None, torch.device("cuda")) is True
    assert resolve_channels_last(None, CPU) is True
    assert resolve_channels_last(None, torch.device("mps")) is False
    assert resolve_channels_last(False, torch.device("cuda")) is False
    assert resolve_channels_last(True, CPU) is True


def test_a_non_finite_loss_stops_or_is_counted(net):
    bad = batch(0)
    bad["image"][0, 0, 0, 0, 0] = float("nan")
    checked = make_step(net)
    with pytest.raises(DSIFNError, match=r"loss is not finite \(nan\) at step 7"):
        checked(bad, where=" at step 7")
    counted = make_step(net, check_finite=False)
    counted(batch(1))
    counted(bad)
    assert int(counted.nonfinite_losses) == 1  # counted, not raised
    assert any(p.grad is not None and not torch.isfinite(p.grad).all() for p in counted.params)


def test_the_loss_pass_gives_the_loss_without_gradients(net):
    step = make_step(net)
    step.model.eval()
    loss = step.loss(batch(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and not loss.requires_grad
    assert all(p.grad is None for p in step.params)


def test_optimisation_is_built_by_the_one_builder_with_its_schedule(net):
    from dsifn.training.config import ScheduleConfig

    step = make_step(net)
    assert step.scheduler is not None and not step.scaler.is_enabled()  # plateau; fp32
    cosine = make_step(net, schedule=ScheduleConfig(scheduler="cosine", epochs=3))
    assert isinstance(cosine.scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert cosine.optimizer.param_groups[0]["params"] == cosine.params
