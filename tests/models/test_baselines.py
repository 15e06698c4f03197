"""One tester for every baseline network (FC-EF, FC-Siam-conc, FC-Siam-diff, CDNet).

A new baseline gets all of these tests by adding a line to ``SPECS``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsifn import DSIFNConfig, InputError
from dsifn.errors import ConfigError
from dsifn.flops import count_parameters, forward_flops
from dsifn.losses import DeepSupervisionLoss
from dsifn.models import (
    FCEF,
    IMAGENET_RGB,
    CDNet,
    CDNetConfig,
    ChangeOutput,
    FCEFConfig,
    FCSiamConc,
    FCSiamConcConfig,
    FCSiamDiff,
    FCSiamDiffConfig,
    Normalization,
)
from dsifn.models.baseline import BaselineConfig, BaselineNetwork
from dsifn.models.cdnet import max_pool_with_switches, unpool
from dsifn.models.fc_blocks import fc_decoder_widths

pytestmark = pytest.mark.usefixtures("one_thread")


class Spec(NamedTuple):
    """What the tester needs to know of one network."""

    model: type[BaselineNetwork]
    config: type[BaselineConfig]
    name: str  # its model.name
    parameters: int  # exactly, for 3 bands per date
    per_band: int  # parameters per further band of each date
    dropout: bool  # Dropout2d after its blocks


SPECS = [
    Spec(FCEF, FCEFConfig, "fc_ef", 1_350_433, 288, True),
    Spec(FCSiamConc, FCSiamConcConfig, "fc_siam_conc", 1_545_841, 144, True),
    Spec(FCSiamDiff, FCSiamDiffConfig, "fc_siam_diff", 1_350_001, 144, True),
    Spec(CDNet, CDNetConfig, "cdnet", 1_427_905, 6_272, False),
]
IDS = [s.name for s in SPECS]


def pair(bands: int, height: int = 32, width: int = 32, batch: int = 2) -> tuple[Tensor, Tensor]:
    return torch.randn(batch, bands, height, width), torch.randn(batch, bands, height, width)


def appearing_square(batch: int = 4, size: int = 32) -> tuple[Tensor, Tensor, Tensor]:
    """T1 noise; T2 the same with a little more noise and a bright square: the change."""
    generator = torch.Generator().manual_seed(1)
    t1 = torch.randn(batch, 3, size, size, generator=generator) * 0.5
    t2 = t1 + torch.randn(t1.shape, generator=generator) * 0.1
    target = torch.zeros(batch, 1, size, size)
    for i in range(batch):
        side = int(torch.randint(size // 4, size // 2, (1,), generator=generator))
        y, x = torch.randint(0, size - side, (2,), generator=generator).tolist()
        t2[i, :, y : y + side, x : x + side] = 2.0
        target[i, :, y : y + side, x : x + side] = 1.0
    return t1, t2, target


def calibrated(model: BaselineNetwork, bands: int = 3) -> BaselineNetwork:
    """``model`` in eval mode with BatchNorm statistics of one batch, as training leaves them.

    Fresh statistics (mean 0, variance 1) shrink the deep features of fresh weights until the
    output hardly depends on the input.
    """
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average: that of the one batch
    model.train()
    with torch.no_grad():
        model(*pair(bands, batch=4))
    return model.eval()


@pytest.fixture(params=SPECS, ids=IDS)
def spec(request: pytest.FixtureRequest) -> Spec:
    param: Spec = request.param
    return param


@pytest.mark.parametrize("bands", [1, 3, 4, 13])
@pytest.mark.parametrize("size", [(37, 53), (16, 16)])
def test_output_type_and_shape(spec: Spec, bands: int, size: tuple[int, int]) -> None:
    model = spec.model(in_channels=bands).eval()
    with torch.no_grad():
        out = model(*pair(bands, *size))
    assert isinstance(out, ChangeOutput) and out._fields == ("stride1",)
    assert out.stride1.shape == (2, 1, *size) and out.stride1.dtype == torch.float32


@pytest.mark.parametrize("bands", [1, 3, 4, 13])
def test_parameter_count(spec: Spec, bands: int) -> None:
    total, trainable = count_parameters(spec.model(in_channels=bands))
    assert total == trainable == spec.parameters + spec.per_band * (bands - 3)


def test_name_and_input_contract(spec: Spec) -> None:
    config = spec.config(in_channels=4)
    assert config.name == spec.name and config.section == "model"
    assert config.input_size is None
    # The same default normalisation as DSIFN's, so all networks see the same input.
    assert config.input_normalization == IMAGENET_RGB.for_bands(4)
    assert config.input_normalization == DSIFNConfig(in_channels=4).input_normalization


def test_outputs_are_logits_not_probabilities(spec: Spec) -> None:
    # In training mode BatchNorm normalises by the batch, so fresh weights give varied maps.
    model = spec.model().train()
    with torch.no_grad():
        logits = model(*(x * 3 for x in pair(3))).stride1
    assert (logits < 0).any() and (logits > 1).any()


def test_eval_mode_is_deterministic_and_batch_items_independent(spec: Spec) -> None:
    model = calibrated(spec.model())
    t1, t2 = pair(3)
    with torch.no_grad():
        first, again = model(t1, t2).stride1, model(t1, t2).stride1
        alone = model(t1[:1], t2[:1]).stride1
        swapped = model(t2, t1).stride1
    assert torch.equal(first, again)
    torch.testing.assert_close(first[:1], alone, atol=1e-5, rtol=1e-4)
    # The order matters (for FC-Siam-diff only through the bottleneck: |a - b| is symmetric).
    assert (first - swapped).abs().max() > 1e-3 * first.abs().max()


def test_dropout_acts_in_training_only_where_the_model_has_it(spec: Spec) -> None:
    model = spec.model().train()
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert bool(dropouts) == spec.dropout
    assert all(m.p == 0.2 for m in dropouts)
    t1, t2 = pair(3)
    with torch.no_grad():
        first, again = model(t1, t2).stride1, model(t1, t2).stride1
    assert torch.equal(first, again) != spec.dropout  # BatchNorm alone is deterministic


def test_no_dropout_when_set_to_zero() -> None:
    model = FCSiamDiff(dropout=0.0).train()
    t1, t2 = pair(3)
    with torch.no_grad():
        assert torch.equal(model(t1, t2).stride1, model(t1, t2).stride1)


def test_padding_crops_back_to_the_padded_prediction(spec: Spec) -> None:
    # 40 is not a multiple of 16: the model pads to 48 by reflection and crops back.
    model = calibrated(spec.model())
    t1, t2 = pair(3, 40, 40, batch=1)
    with torch.no_grad():
        out = model(t1, t2).stride1
        padded = [F.pad(x, (0, 8, 0, 8), mode="reflect") for x in (t1, t2)]
        reference = model(*padded).stride1
    torch.testing.assert_close(out, reference[..., :40, :40])


def test_gradients_reach_every_parameter(spec: Spec) -> None:
    model = spec.model().train()
    model(*pair(3)).stride1.mean().backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_loss_falls_when_training_on_an_appearing_square(spec: Spec) -> None:
    model = spec.model().train()
    loss_fn = DeepSupervisionLoss(weights=(1.0,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    t1, t2, target = appearing_square()
    losses = []
    for _ in range(8):
        optimizer.zero_grad()
        loss = loss_fn(model(t1, t2), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert sum(losses[-2:]) / 2 < 0.9 * losses[0], losses


def _config_of(spec: Spec) -> BaselineConfig:
    norm = Normalization(mean=(0.1, 0.2, 0.3, 0.4), std=(0.5, 0.6, 0.7, 0.8))
    config = spec.config(in_channels=4, normalization=norm)
    return dataclasses.replace(config, dropout=0.1) if spec.dropout else config


def test_config_round_trip_rebuilds_the_model(spec: Spec) -> None:
    config = _config_of(spec)
    model = spec.model(config).eval()
    record = config.to_dict()
    assert isinstance(record["normalization"]["mean"], tuple)  # as checkpoints hold them
    assert spec.config.from_dict(record) == config
    rebuilt = spec.model(spec.config.from_dict(record)).eval()
    rebuilt.load_state_dict(model.state_dict())
    t1, t2 = pair(4)
    with torch.no_grad():
        assert torch.equal(model(t1, t2).stride1, rebuilt(t1, t2).stride1)
    assert model.checkpoint_meta == {}


def test_options_override_the_config(spec: Spec) -> None:
    model = spec.model(_config_of(spec), in_channels=2, normalization=None)
    assert model.config.in_channels == 2 and model.config.normalization is None
    assert model.config.input_normalization == IMAGENET_RGB.for_bands(2)


def test_config_errors(spec: Spec) -> None:
    with pytest.raises(ConfigError, match="in_channels must be at least 1"):
        spec.config(in_channels=0)
    with pytest.raises(ConfigError, match="normalization has 3 bands"):
        spec.config(in_channels=4, normalization=IMAGENET_RGB)
    other = next(s for s in SPECS if s.config is not spec.config)
    with pytest.raises(ConfigError, match=f"expected a {spec.config.__name__}"):
        spec.model(other.config())  # type: ignore[arg-type]
    if spec.dropout:
        with pytest.raises(ConfigError, match="dropout must be in"):
            spec.config.from_dict({"dropout": 1.0})
    else:
        with pytest.raises(ConfigError, match=r"unknown config key.*model\.dropout"):
            spec.config.from_dict({"dropout": 0.2})


def test_input_errors(spec: Spec) -> None:
    model = spec.model()
    with pytest.raises(InputError, match="expected 3 bands"):
        model(*pair(4))
    with pytest.raises(InputError, match="at least 16"):
        model(*pair(3, 8, 32))


def test_flops_are_counted(spec: Spec) -> None:
    # On the meta device nothing is computed; the counter reads the shapes.
    flops = forward_flops(spec.model().to("meta"), 256)
    assert 1e9 < flops < 1e11


def _hand_count(convs: list[tuple[int, int, int]], kernel: int) -> int:
    # Two operations per multiply-accumulate; (side, in, out) per convolution.
    return sum(2 * kernel * kernel * side * side * cin * cout for side, cin, cout in convs)


def test_flops_match_a_hand_count() -> None:
    fc_ef = [  # encoder; then per decoder level: transposed conv (at its input side), blocks
        (256, 6, 16), (256, 16, 16), (128, 16, 32), (128, 32, 32),
        (64, 32, 64), (64, 64, 64), (64, 64, 64), (32, 64, 128), (32, 128, 128), (32, 128, 128),
        (16, 128, 128), (32, 256, 128), (32, 128, 128), (32, 128, 64),
        (32, 64, 64), (64, 128, 64), (64, 64, 64), (64, 64, 32),
        (64, 32, 32), (128, 64, 32), (128, 32, 16),
        (128, 16, 16), (256, 32, 16), (256, 16, 1),
    ]  # fmt: skip
    cdnet = [(256, 6, 64), (128, 64, 64), (64, 64, 64), (32, 64, 64)]
    cdnet += [(side, 64, 64) for side in (32, 64, 128, 256)] + [(256, 64, 1)]
    for model, hand in ((FCEF(), _hand_count(fc_ef, 3)), (CDNet(), _hand_count(cdnet, 7))):
        assert 0.5 < forward_flops(model.to("meta"), 256) / hand < 2


def test_fc_decoder_widths_follow_the_published_network() -> None:
    assert fc_decoder_widths((16, 32, 64, 128), (2, 2, 3, 3)) == [
        (128, 128, 64),
        (64, 64, 32),
        (32, 16),
        (16,),
    ]
    model = FCSiamConc()
    ins = [s.blocks[0][0].in_channels for s in model.decoder.stages]  # type: ignore[index]
    assert ins == [384, 192, 96, 48]  # upsampled state plus both dates' taps


@pytest.mark.parametrize("integers", [False, True], ids=["floats", "ties"])
def test_unpooling_equals_max_unpool(integers: bool) -> None:
    x = torch.randint(0, 3, (2, 3, 8, 12)).float() if integers else torch.randn(2, 3, 8, 12)
    x.requires_grad_(True)
    pooled, switches = max_pool_with_switches(x)
    ours = unpool(pooled * 2 + 1, switches)
    reference_pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    reference = F.max_unpool2d(reference_pooled * 2 + 1, indices, 2)
    assert torch.equal(pooled, reference_pooled) and torch.equal(ours, reference)
    weights = torch.randn(ours.shape)
    (grad,) = torch.autograd.grad((ours * weights).sum(), x)
    (reference_grad,) = torch.autograd.grad((reference * weights).sum(), x)
    assert torch.equal(grad, reference_grad)


class _Logits(nn.Module):
    """The network with a plain tensor out, as an exported graph has it."""

    def __init__(self, model: BaselineNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, t1: Tensor, t2: Tensor) -> Tensor:
        return self.model(t1, t2).stride1


def _exportable(spec: Spec) -> nn.Module:
    return _Logits(calibrated(spec.model())).eval()


def _export(net: nn.Module, file: Path, dynamo: bool) -> None:
    sample = pair(3, 32, 32, batch=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' notes on axis names and deprecations
        if dynamo:
            side = {
                0: torch.export.Dim("batch", min=1, max=64),
                2: 16 * torch.export.Dim("height16", min=1, max=256),
                3: 16 * torch.export.Dim("width16", min=1, max=256),
            }
            program = torch.onnx.export(
                net,
                sample,
                dynamo=True,
                opset_version=18,
                input_names=["t1", "t2"],
                output_names=["logits"],
                dynamic_shapes={"t1": side, "t2": side},
                verbose=False,
            )
            assert program is not None
            program.save(str(file))
        else:
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                net,
                sample,
                str(file),
                dynamo=False,
                opset_version=18,
                input_names=["t1", "t2"],
                output_names=["logits"],
                dynamic_axes={"t1": axes, "t2": axes, "logits": axes},
            )


def _check_runtimes(net: nn.Module, file: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    ov = pytest.importorskip("openvino")
    t1, t2 = pair(3, 48, 80)  # not the export sample's size or batch
    # Runtimes fold BatchNorm into the convolutions and sum in other orders: CDNet's sums of
    # 3,136 products differ by up to about 2e-5 on outputs of about 5.
    with torch.no_grad():
        expected = net(t1, t2).numpy()
    feed: dict[str, Any] = {"t1": t1.numpy(), "t2": t2.numpy()}
    session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, feed)[0], expected, rtol=1e-4, atol=1e-5)
    core = ov.Core()
    compiled = core.compile_model(
        core.read_model(str(file)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    np.testing.assert_allclose(compiled(feed)[0], expected, rtol=1e-4, atol=1e-5)


def test_onnx_torchscript_export_runs_in_onnxruntime_and_openvino(
    spec: Spec, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    net = _exportable(spec)
    _export(net, tmp_path / "model.onnx", dynamo=False)
    _check_runtimes(net, tmp_path / "model.onnx")


@pytest.mark.slow  # about 10 s per network on 2 cores
def test_onnx_dynamo_export_runs_in_onnxruntime_and_openvino(spec: Spec, tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    net = _exportable(spec)
    _export(net, tmp_path / "model.onnx", dynamo=True)
    _check_runtimes(net, tmp_path / "model.onnx")
