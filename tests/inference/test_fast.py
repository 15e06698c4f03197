"""Fast paths: exact BatchNorm folding, inference and training preparation (CPU, fp32)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsifn.errors import ConfigError
from dsifn.inference.fast import (
    FoldedConv2d,
    fold_batchnorm,
    optimize_for_inference,
)
from dsifn.models import DSIFN

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_batchnorms(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial statistics and affine parameters (negative scales too)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.rand(n, generator=generator) * 2 - 1)
                module.running_var.copy_(torch.rand(n, generator=generator) * 1.5 + 0.5)
                module.weight.copy_(torch.rand(n, generator=generator) * 3 - 1.5)
                module.bias.copy_(torch.rand(n, generator=generator) * 2 - 1)


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


@pytest.fixture(scope="module")
def model() -> DSIFN:
    torch.manual_seed(0)
    net = DSIFN()
    _randomise_batchnorms(net)
    return net.eval()


@pytest.mark.parametrize("size", [(1, 1), (2, 5), (3, 3), (4, 7), (9, 6), (12, 12)])
def test_folded_conv_matches_batchnorm_then_conv_everywhere(size):
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(5).eval()
    _randomise_batchnorms(bn)
    conv = nn.Conv2d(5, 4, 3, padding=1)
    x = torch.randn(2, 5, *size)
    weight, var = bn.weight.detach(), bn.running_var
    scale = weight / torch.sqrt(var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    folded = FoldedConv2d.fold(conv, scale, shift)
    with torch.no_grad():
        expected = conv(bn(x))
        got = folded(x)
        uncorrected = nn.Conv2d.forward(folded, x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # The border correction is what makes it exact: without it the border pixels are wrong...
    assert (uncorrected - expected).abs().max() > 1e-3
    # ...and only they are.
    if min(size) >= 3:
        torch.testing.assert_close(
            uncorrected[..., 1:-1, 1:-1], expected[..., 1:-1, 1:-1], atol=1e-5, rtol=1e-5
        )


def test_fold_refuses_convolutions_it_cannot_fold():
    scale, shift = torch.ones(3), torch.zeros(3)
    with pytest.raises(ValueError, match="stride-1"):
        FoldedConv2d.fold(nn.Conv2d(3, 3, 3, padding=1, stride=2), scale, shift)
    with pytest.raises(ValueError, match="zero-padded"):
        FoldedConv2d.fold(nn.Conv2d(3, 3, 3, padding=0), scale, shift)


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (37, 50)])
def test_fold_batchnorm_matches_the_eval_model_at_odd_sizes(model, size):
    folded = fold_batchnorm(model)
    # 9 block BatchNorms fold into the next conv, stage 5's BatchNorm into its head.
    assert _count_bn(model) == 19
    assert _count_bn(folded) == 9
    generator = torch.Generator().manual_seed(2)
    t1 = torch.randn(1, 3, *size, generator=generator)
    t2 = torch.randn(1, 3, *size, generator=generator)
    with torch.no_grad():
        expected = model(t1, t2)
        got = folded(t1, t2)
    for a, b in zip(expected, got, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_keras_variant():
    torch.manual_seed(3)
    net = DSIFN(variant="keras", input_size=32)
    _randomise_batchnorms(net, seed=3)
    net.eval()
    folded = fold_batchnorm(net)
    assert _count_bn(net) == 18  # no BatchNorm after stage 5's spatial attention
    assert _count_bn(folded) == 9  # its last conv blocks and stages 1-4's stay
    t1, t2 = torch.randn(2, 1, 3, 32, 32).unbind(0)
    with torch.no_grad():
        for a, b in zip(net(t1, t2), folded(t1, t2), strict=True):
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_fold_batchnorm_leaves_the_model_alone(model):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model)
    assert _count_bn(model) == 19
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_optimize_for_inference_fp32_equals_eager(model):
    fast, precision = optimize_for_inference(model, device="cpu", precision="fp32")
    assert precision == "fp32"
    assert fast.precision == "fp32"
    assert fast.module.encoder.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    # The caller's model keeps its layout and BatchNorms.
    assert model.encoder.features[0].weight.is_contiguous()
    assert _count_bn(model) == 19
    t1, t2 = torch.randn(2, 2, 3, 33, 20).unbind(0)
    with torch.no_grad():
        expected = model(t1, t2)
    got = fast(t1, t2)
    for a, b in zip(expected, got, strict=True):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_optimize_for_inference_without_folding_or_nhwc(model):
    fast, _ = optimize_for_inference(
        model, device="cpu", precision="fp32", channels_last=False, fold_bn=False
    )
    assert _count_bn(fast.module) == 19
    t1, t2 = torch.randn(2, 1, 3, 16, 24).unbind(0)
    with torch.no_grad():
        expected = model(t1, t2).stride1
    torch.testing.assert_close(fast(t1, t2).stride1, expected, atol=1e-5, rtol=1e-5)


def test_optimize_for_inference_checks_precision(model):
    with pytest.raises(ConfigError, match="precision"):
        optimize_for_inference(model, device="cpu", precision="fp64")
    with pytest.raises(ConfigError, match="CUDA"):
        optimize_for_inference(model, device="cpu", precision="fp16")


def test_torch_runner_uses_the_fast_path_with_the_same_probabilities(model):
    import numpy as np

    from dsifn.inference.runner import TorchRunner

    fast = TorchRunner(model, device="cpu", precision="fp32")
    plain = TorchRunner(model, device="cpu", precision="fp32", fast=False)
    assert fast.fast is not None and _count_bn(fast.fast.module) == 9  # folded copy
    assert plain.fast is None
    rng = np.random.default_rng(0)
    t1, t2 = rng.standard_normal((2, 2, 3, 40, 24), dtype=np.float32)
    np.testing.assert_allclose(fast(t1, t2), plain(t1, t2), atol=1e-6)


class _OldSpatialAttention(nn.Module):
    # The spatial attention as first written, with amax: its compiled bf16 gradient was NaN.
    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.conv(pooled))


def _compiled_bf16_gradients_finite(attention: nn.Module) -> bool:
    torch.manual_seed(0)
    torch._dynamo.reset()
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), attention).train()
    compiled = torch.compile(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = compiled(torch.randn(2, 4, 8, 8))
    out.float().square().mean().backward()
    return all(bool(torch.isfinite(p.grad).all()) for p in net.parameters() if p.grad is not None)


def test_spatial_attention_trains_compiled_in_bf16():
    # Found on an H200 and reproduced on a CPU: the whole compiled DSIFN trained in bf16 had
    # NaN gradients from the first step. The block in which it happened, BatchNorm then spatial
    # attention, shows it in seconds; the old form is kept here to show the test can tell.
    from dsifn.models.decoder import SpatialAttention

    attention = SpatialAttention()
    assert _compiled_bf16_gradients_finite(attention)
    assert not _compiled_bf16_gradients_finite(_OldSpatialAttention(attention.conv))
