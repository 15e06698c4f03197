"""DeepSupervisionLoss against formulas written out independently here."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dsifn.errors import ConfigError, InputError
from dsifn.losses import DeepSupervisionLoss, downsample_target
from dsifn.models.dsifn import DSIFN, DSIFNOutput

STRIDES = (1, 2, 4, 8, 16)


def make_outputs(batch, height, width, dtype=torch.float32, requires_grad=False):
    gen = torch.Generator().manual_seed(1)
    outs = []
    for s in STRIDES:
        shape = (batch, 1, math.ceil(height / s), math.ceil(width / s))
        t = (torch.randn(shape, generator=gen) * 2).to(dtype)
        outs.append(t.requires_grad_(requires_grad))
    return outs


def make_target(batch, height, width, p=0.3, seed=2):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, height, width, generator=gen) < p).float()


# --- the direct formula, written with plain loops and numpy -----------------------------------


def cell_targets(target, valid, s):
    """Changed fraction among valid pixels of each s x s cell, and whether the cell counts."""
    b, _, h, w = target.shape
    oh, ow = math.ceil(h / s), math.ceil(w / s)
    frac = np.zeros((b, 1, oh, ow))
    counts = np.zeros((b, 1, oh, ow), dtype=bool)
    t = target.numpy()
    v = np.ones_like(t, dtype=bool) if valid is None else valid.numpy()
    for n in range(b):
        for i in range(oh):
            for j in range(ow):
                block_t = t[n, 0, i * s : (i + 1) * s, j * s : (j + 1) * s]
                block_v = v[n, 0, i * s : (i + 1) * s, j * s : (j + 1) * s]
                if block_v.any():
                    frac[n, 0, i, j] = block_t[block_v].mean()
                    counts[n, 0, i, j] = True
    return frac, counts


def bilinear_up(x, s, h, w):
    """Bilinear upsampling by s (half-pixel centres, edge clamped), cropped to h x w."""
    x = x.astype(np.float64)
    ih, iw = x.shape[-2:]

    def axis(n_in, n_out):
        src = np.maximum((np.arange(n_out) + 0.5) / s - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, src - i0

    r0, r1, fr = axis(ih, ih * s)
    c0, c1, fc = axis(iw, iw * s)
    rows = x[..., r0, :] * (1 - fr)[:, None] + x[..., r1, :] * fr[:, None]
    out = rows[..., c0] * (1 - fc) + rows[..., c1] * fc
    return out[..., :h, :w]


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def direct_loss(outputs, target, valid=None, mode="downsample", pos_weight=None, smooth=1.0):
    """Sum over scales of mean BCE plus batch soft Dice, from the formulas."""
    pw = 1.0 if pos_weight is None else pos_weight
    h, w = target.shape[-2:]
    total = 0.0
    for out, s in zip(outputs, STRIDES, strict=True):
        x = out.detach().double().numpy()
        if mode == "downsample":
            y, m = cell_targets(target, valid, s)
        else:
            x = bilinear_up(x, s, h, w)
            y = target.double().numpy()
            m = np.ones_like(y, dtype=bool) if valid is None else valid.numpy()
        bce = -(pw * y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x))
        bce_mean = bce[m].sum() / max(m.sum(), 1)
        p = 1.0 / (1.0 + np.exp(-x))
        p, y = p[m], y[m]
        dice = 1 - (2 * (p * y).sum() + smooth) / (p.sum() + y.sum() + smooth)
        total += bce_mean + dice
    return total


# --- tests -----------------------------------------------------------------------------------


def test_downsample_target_by_hand():
    # 3x5 reference, stride 2: cells are rows {0,1},{2} x cols {0,1},{2,3},{4}.
    target = torch.tensor(
        [[1, 0, 1, 1, 0], [1, 0, 1, 0, 1], [0, 0, 1, 1, 1]], dtype=torch.float32
    ).view(1, 1, 3, 5)
    valid = torch.tensor(
        [[1, 1, 0, 0, 1], [1, 1, 0, 0, 1], [1, 1, 1, 0, 0]], dtype=torch.bool
    ).view(1, 1, 3, 5)
    frac, mask = downsample_target(target, valid, 2)
    assert mask is not None
    # Cell (0,0): 2 changed of 4 valid; (0,1): no valid pixel; (0,2): 1 of 2;
    # (1,0): 0 of 2; (1,1): 1 of 1 valid; (1,2): no valid pixel.
    assert mask[0, 0].tolist() == [[True, False, True], [True, True, False]]
    expected = torch.tensor([[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]])
    torch.testing.assert_close(frac[0, 0] * mask[0, 0], expected)
    # Without a mask the partial edge cells average over their real pixels only.
    frac, mask = downsample_target(target, None, 2)
    assert mask is None
    expected = torch.tensor([[0.5, 0.75, 0.5], [0.0, 1.0, 1.0]])
    torch.testing.assert_close(frac[0, 0], expected)


@pytest.mark.parametrize("mode", ["downsample", "upsample"])
@pytest.mark.parametrize("size", [(32, 48), (37, 53)])
def test_matches_direct_formula(mode, size):
    h, w = size
    outputs = make_outputs(2, h, w)
    target = make_target(2, h, w)
    loss = DeepSupervisionLoss(target_mode=mode)(outputs, target)
    assert loss.dtype == torch.float32 and loss.ndim == 0
    assert loss.item() == pytest.approx(direct_loss(outputs, target, mode=mode), rel=1e-5)


@pytest.mark.parametrize("mode", ["downsample", "upsample"])
def test_matches_direct_formula_with_mask_pos_weight_and_soft_target(mode):
    h, w = 37, 53
    outputs = make_outputs(2, h, w)
    gen = torch.Generator().manual_seed(5)
    target = torch.rand(2, 1, h, w, generator=gen)  # soft reference
    valid = torch.rand(2, 1, h, w, generator=gen) > 0.4
    valid[1, :, :20, :] = False  # whole cells without a valid pixel at every scale
    loss_fn = DeepSupervisionLoss(target_mode=mode, pos_weight=3.0, smooth=0.5)
    loss = loss_fn(outputs, target, valid)
    expected = direct_loss(outputs, target, valid, mode=mode, pos_weight=3.0, smooth=0.5)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_pos_weight_changes_bce_only_on_changed_pixels():
    outputs = make_outputs(1, 32, 32)
    target = make_target(1, 32, 32)
    plain = DeepSupervisionLoss()(outputs, target)
    assert DeepSupervisionLoss(pos_weight=1.0)(outputs, target).item() == pytest.approx(
        plain.item(), rel=1e-6
    )
    heavier = DeepSupervisionLoss(pos_weight=5.0)(outputs, target)
    assert heavier.item() > plain.item()
    # With no change in the reference the positive weight has nothing to act on.
    empty = torch.zeros_like(target)
    a = DeepSupervisionLoss()(outputs, empty).item()
    b = DeepSupervisionLoss(pos_weight=5.0)(outputs, empty).item()
    assert a == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize("mode", ["downsample", "upsample"])
def test_pixels_outside_valid_mask_do_not_count(mode):
    h, w = 37, 53
    outputs = make_outputs(2, h, w)
    target = make_target(2, h, w)
    valid = torch.ones(2, 1, h, w, dtype=torch.bool)
    valid[:, :, 16:32, 16:48] = False  # whole cells at strides up to 16
    loss_fn = DeepSupervisionLoss(target_mode=mode)
    before = loss_fn(outputs, target, valid)
    changed = target.clone()
    changed[:, :, 16:32, 16:48] = 1 - changed[:, :, 16:32, 16:48]
    assert loss_fn(outputs, changed, valid).item() == pytest.approx(before.item(), rel=1e-6)
    assert loss_fn(outputs, changed).item() != pytest.approx(before.item(), rel=1e-3)
    if mode == "downsample":
        # Logits over fully invalid cells do not count either.
        moved = [o.clone() for o in outputs]
        moved[0][:, :, 16:32, 16:48] += 10.0
        moved[4][:, :, 1, 1:3] -= 10.0
        assert loss_fn(moved, target, valid).item() == pytest.approx(before.item(), rel=1e-6)


def test_gradient_reaches_all_five_outputs():
    outputs = make_outputs(2, 37, 53, requires_grad=True)
    target = make_target(2, 37, 53)
    for mode in ("downsample", "upsample"):
        for o in outputs:
            o.grad = None
        DeepSupervisionLoss(target_mode=mode)(outputs, target).backward()
        for o in outputs:
            assert o.grad is not None and torch.isfinite(o.grad).all()
            assert o.grad.abs().sum() > 0


def test_per_scale_weights_and_components():
    outputs = make_outputs(1, 32, 32)
    target = make_target(1, 32, 32)
    weights = (1.0, 0.5, 0.25, 0.0, 2.0)
    loss_fn = DeepSupervisionLoss(weights=weights, bce_weight=0.7, dice_weight=1.3)
    parts = loss_fn.components(outputs, target)
    assert sorted(parts) == sorted(f"{kind}_stride{s}" for kind in ("bce", "dice") for s in STRIDES)
    expected = sum(
        w * (0.7 * parts[f"bce_stride{s}"] + 1.3 * parts[f"dice_stride{s}"])
        for w, s in zip(weights, STRIDES, strict=True)
    )
    assert loss_fn(outputs, target).item() == pytest.approx(float(expected), rel=1e-6)
    # The unweighted stride-1 terms agree with the formula for that one scale.
    x = outputs[0].double().numpy()
    y = target.double().numpy()
    bce = -(y * log_sigmoid(x) + (1 - y) * log_sigmoid(-x)).mean()
    assert parts["bce_stride1"].item() == pytest.approx(bce, rel=1e-5)


def test_under_bfloat16_autocast():
    outputs = make_outputs(2, 37, 53)
    target = make_target(2, 37, 53)
    loss_fn = DeepSupervisionLoss()
    reference = loss_fn(outputs, target)
    low = [o.to(torch.bfloat16) for o in outputs]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = loss_fn(low, target)
    assert loss.dtype == torch.float32
    # Computed in float32 from the bf16 values: equal to the float32 loss of those values...
    exact = loss_fn([o.float() for o in low], target)
    assert loss.item() == pytest.approx(exact.item(), rel=1e-6)
    # ... and close to the float32 loss of the unrounded logits.
    assert loss.item() == pytest.approx(reference.item(), rel=1e-2)


def test_all_background_and_no_valid_pixels_stay_finite():
    outputs = make_outputs(2, 32, 32, requires_grad=True)
    target = torch.zeros(2, 1, 32, 32)
    parts = DeepSupervisionLoss().components(outputs, target)
    p = torch.sigmoid(outputs[0].detach().double()).sum().item()
    assert parts["dice_stride1"].item() == pytest.approx(1 - 1 / (p + 1), rel=1e-5)
    nothing = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    loss = DeepSupervisionLoss()(outputs, target, nothing)
    assert torch.isfinite(loss) and loss.item() == 0.0
    loss.backward()  # still part of the graph


def test_works_with_model_output():
    model = DSIFN(dropout=0.0)
    t1, t2 = torch.randn(1, 3, 37, 53), torch.randn(1, 3, 37, 53)
    out = model(t1, t2)
    assert isinstance(out, DSIFNOutput)
    loss = DeepSupervisionLoss()(out, make_target(1, 37, 53))
    loss.backward()
    assert all(p.grad is not None for p in model.heads.parameters())


def test_bad_options_and_inputs():
    with pytest.raises(ConfigError, match="target_mode"):
        DeepSupervisionLoss(target_mode="nearest")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="smooth"):
        DeepSupervisionLoss(smooth=0.0)
    with pytest.raises(ConfigError, match="pos_weight"):
        DeepSupervisionLoss(pos_weight=-1.0)
    with pytest.raises(ConfigError, match="weights"):
        DeepSupervisionLoss(weights=(1.0, -1.0))
    loss_fn = DeepSupervisionLoss()
    outputs = make_outputs(1, 32, 32)
    with pytest.raises(InputError, match="0/255"):
        loss_fn(outputs, make_target(1, 32, 32) * 255)
    with pytest.raises(InputError, match="side outputs"):
        loss_fn(outputs[:4], make_target(1, 32, 32))
    with pytest.raises(InputError, match="side output 0"):
        loss_fn(outputs, make_target(1, 40, 32))
    with pytest.raises(InputError, match="valid mask"):
        loss_fn(outputs, make_target(1, 32, 32), torch.ones(1, 1, 16, 16, dtype=torch.bool))
