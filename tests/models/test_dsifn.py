import math

import pytest
import torch
from torch import nn

from dsifn import DSIFN, DSIFNConfig, DSIFNOutput, InputError
from dsifn.errors import ConfigError
from dsifn.models.decoder import ChannelAttention, DecoderStage, ElementwisePReLU, decoder_widths
from dsifn.models.vgg import VGG16Encoder


@pytest.fixture(scope="module")
def model() -> DSIFN:
    torch.manual_seed(0)
    return DSIFN().eval()


def count(module: nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable)


@pytest.mark.parametrize("size", [(16, 16), (32, 48), (37, 53), (65, 17)])
def test_output_shapes_and_order(model: DSIFN, size: tuple[int, int]) -> None:
    h, w = size
    with torch.no_grad():
        out = model(torch.rand(2, 3, h, w), torch.rand(2, 3, h, w))
    assert isinstance(out, DSIFNOutput)
    assert out._fields == ("stride1", "stride2", "stride4", "stride8", "stride16")
    for stride, logits in zip((1, 2, 4, 8, 16), out, strict=True):
        assert logits.shape == (2, 1, math.ceil(h / stride), math.ceil(w / stride))
        assert logits.dtype == torch.float32


def test_outputs_are_logits_not_probabilities(model: DSIFN) -> None:
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32) * 3, torch.randn(1, 3, 32, 32) * 3)
    values = torch.cat([o.flatten() for o in out])
    assert (values < 0).any() or (values > 1).any()


def test_padding_crops_back_to_the_unpadded_prediction(model: DSIFN) -> None:
    # 40 is not a multiple of 16: the model reflect-pads to 48 at the bottom and right, then
    # crops every output to ceil(40 / s), which must equal doing the padding by hand.
    x1, x2 = torch.rand(1, 3, 40, 40), torch.rand(1, 3, 40, 40)
    with torch.no_grad():
        out = model(x1, x2)
        padded = torch.nn.functional.pad(x1, (0, 8, 0, 8), mode="reflect")
        padded2 = torch.nn.functional.pad(x2, (0, 8, 0, 8), mode="reflect")
        reference = model(padded, padded2)
    torch.testing.assert_close(out.stride1, reference.stride1[..., :40, :40])
    torch.testing.assert_close(out.stride16, reference.stride16[..., :3, :3])


def test_pair_order_matters_and_batch_items_are_independent(model: DSIFN) -> None:
    a, b = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        both = model(a, b).stride1
        first = model(a[:1], b[:1]).stride1
        swapped = model(b, a).stride1
    torch.testing.assert_close(both[:1], first, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(both, swapped)


def test_default_parameter_counts_match_the_paper() -> None:
    model = DSIFN()
    assert round(count(model) / 1e6, 2) == 35.73
    assert round(count(model.encoder) / 1e6, 2) == 14.71
    assert round(count(model, trainable=True) / 1e6, 1) == 21.0
    assert round(count(DSIFN(shared_encoder=False)) / 1e6, 1) == 50.4


def test_every_module_is_used_in_forward() -> None:
    model = DSIFN(shared_encoder=False, freeze_encoder=False).train()
    out = model(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    sum(o.mean() for o in out).backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert unused == []


def test_backward_reaches_the_decoder_but_not_the_frozen_encoder() -> None:
    model = DSIFN().train()
    out = model(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    sum(o.mean() for o in out).backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.stages.parameters())
    assert all(p.grad is not None for p in model.heads.parameters())


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_frozen_encoder_is_unchanged_after_optimizer_steps(optimizer: str) -> None:
    model = DSIFN().train()
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in model.stages.state_dict().items()}
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    else:  # weight decay must not touch frozen parameters either
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    for _ in range(2):
        opt.zero_grad()
        out = model(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
        sum(o.mean() for o in out).backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.encoder.state_dict().items())
    assert any(not torch.equal(decoder[k], v) for k, v in model.stages.state_dict().items())
    assert not model.encoder.training  # a frozen encoder stays in eval mode under model.train()


def test_trainable_encoder_gets_gradients() -> None:
    model = DSIFN(freeze_encoder=False).train()
    assert model.encoder.training
    out = model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    out.stride1.mean().backward()
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_separate_encoders_see_their_own_date() -> None:
    model = DSIFN(shared_encoder=False).eval()
    with torch.no_grad():
        for p in model.encoder_t2.parameters():  # type: ignore[union-attr]
            p.mul_(0.5)
        a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
        shared = DSIFN().eval()
        shared.load_state_dict(
            {k: v for k, v in model.state_dict().items() if not k.startswith("encoder_t2.")}
        )
        assert not torch.allclose(model(a, b).stride1, shared(a, b).stride1)


def test_vgg_taps_are_found_from_the_max_pools() -> None:
    encoder = VGG16Encoder()
    assert encoder.tap_indices == (3, 8, 15, 22, 29)
    assert encoder.out_channels == (64, 128, 256, 512, 512)
    assert isinstance(encoder.features[encoder.tap_indices[0] + 1], nn.MaxPool2d)
    taps = encoder(torch.rand(1, 3, 32, 32))
    assert [t.shape[-1] for t in taps] == [32, 16, 8, 4, 2]


def test_decoder_widths_follow_the_paper_table() -> None:
    assert decoder_widths((64, 128, 256, 512, 512)) == [
        (512, 512),
        (512, 256, 256),
        (256, 128, 128),
        (128, 64, 64),
        (64, 32, 16),
    ]
    model = DSIFN()
    in_channels = [s.blocks[0][0].in_channels for s in model.stages]  # type: ignore[index]
    assert in_channels == [1024, 1536, 768, 384, 192]
    assert len(model.stages) == 5 and all(isinstance(s, DecoderStage) for s in model.stages)


def test_stage1_channel_attention_option() -> None:
    assert DSIFN().stages[0].channel_attention is None
    stage1 = DSIFN(stage1_channel_attention=True).stages[0].channel_attention
    assert isinstance(stage1, ChannelAttention) and stage1.fc1.in_channels == 1024


@pytest.mark.parametrize("bands", [1, 4, 13])
def test_any_band_count(bands: int) -> None:
    model = DSIFN(in_channels=bands).eval()
    with torch.no_grad():
        out = model(torch.rand(1, bands, 32, 32), torch.rand(1, bands, 32, 32))
    assert out.stride1.shape == (1, 1, 32, 32)
    assert model.config.input_normalization.bands == bands


def test_keras_variant_structure() -> None:
    model = DSIFN(variant="keras", input_size=64)
    stage5 = model.stages[-1]
    assert stage5.norm is None and all(s.norm is not None for s in model.stages[:-1])
    prelu = stage5.blocks[0][1]  # type: ignore[index]
    assert isinstance(prelu, ElementwisePReLU) and prelu.weight.shape == (64, 64, 64)
    bn = stage5.blocks[0][2]  # type: ignore[index]
    assert bn.eps == 1e-3 and bn.momentum == pytest.approx(0.01)
    assert model.stages[1].channel_attention.fc1.bias is not None  # type: ignore[union-attr]
    assert model.config.input_normalization.reverse_bands
    with pytest.raises(InputError, match="64x64 inputs only"):
        model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))


def test_elementwise_prelu() -> None:
    act = ElementwisePReLU((2, 1, 1))
    with torch.no_grad():
        act.weight[1] = 0.5
    x = torch.tensor([[[[-2.0]], [[-2.0]]], [[[3.0]], [[3.0]]]])
    torch.testing.assert_close(act(x).flatten(), torch.tensor([-0.5, -1.0, 3.0, 3.0]))


@pytest.mark.parametrize(
    ("t1", "t2", "message"),
    [
        (torch.rand(1, 4, 32, 32), torch.rand(1, 4, 32, 32), "expected 3 bands"),
        (torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 48), "shapes differ"),
        (torch.rand(1, 3, 8, 32), torch.rand(1, 3, 8, 32), "at least 16"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8),) * 2 + ("float tensor",),
        (torch.rand(3, 32, 32), torch.rand(3, 32, 32), r"\(B, C, H, W\)"),
    ],
)
def test_bad_input_is_a_clear_value_error(
    model: DSIFN, t1: torch.Tensor, t2: torch.Tensor, message: str
) -> None:
    with pytest.raises(InputError, match=message) as info:
        model(t1, t2)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"variant": "tensorflow"}, "variant must be one of 'pytorch', 'keras'"),
        ({"in_channels": 0}, "in_channels"),
        ({"dropout": 1.0}, "dropout"),
        ({"input_size": 512}, "input_size"),
        ({"variant": "keras", "input_size": 100}, "multiple of 16"),
    ],
)
def test_bad_config_lists_what_is_valid(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        DSIFNConfig(**options)  # type: ignore[arg-type]


def test_config_round_trips_through_plain_dicts() -> None:
    config = DSIFNConfig(in_channels=4, shared_encoder=False, dropout=0.1)
    assert DSIFNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) model.depth; valid keys"):
        DSIFNConfig.from_dict({**config.to_dict(), "depth": 3})


def test_dropout_is_active_in_train_mode_only() -> None:
    model = DSIFN(dropout=0.5)
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    model.train()
    assert not torch.equal(model(a, b).stride1, model(a, b).stride1)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(a, b).stride1, model(a, b).stride1)
