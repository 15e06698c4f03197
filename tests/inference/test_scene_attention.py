"""Scene-wide channel attention: tiled DSIFN equals DSIFN run on the whole scene."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import rasterio
import torch
import torch.nn.functional as F
from torch import nn

from dsifn import DSIFN
from dsifn.errors import ConfigError, InputError
from dsifn.inference import TorchRunner, predict_scene
from dsifn.inference.scene_attention import WindowGrid, axis_windows
from dsifn.inference.tiling import DIHEDRAL, apply_dihedral, invert_dihedral
from dsifn.models import vgg
from fixtures.rasters import uint16_scene, write_geotiff
from fixtures.runners import LocalRunner

SCALE = 10000.0  # uint16_scene's reflectances run to 10000


@pytest.mark.parametrize(
    ("length", "window", "margin"),
    [(656, 608, 288), (1104, 864, 288), (3008, 1024, 288), (4000, 640, 304), (608, 1024, 288)],
)
def test_cores_partition_the_axis_and_keep_their_margins(length, window, margin):
    spans = axis_windows(length, window, margin)
    cores = [(c0, c1) for _, c0, c1 in spans]
    assert cores[0][0] == 0 and cores[-1][1] == length
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in itertools.pairwise(cores))
    for start, c0, c1 in spans:
        end = start + min(window, length)
        assert start % 16 == 0 and c0 % 16 == 0 and c1 % 16 == 0
        assert 0 <= start <= c0 < c1 <= end <= length
        assert start == 0 or c0 - start >= margin - 8  # context above an inner core edge
        assert end == length or end - c1 >= margin - 8


def test_window_plan_refuses_windows_without_a_core_and_tiny_scenes():
    with pytest.raises(ConfigError, match="at least 592"):
        WindowGrid.plan(2000, 2000, 576, 275)
    with pytest.raises(ConfigError, match="multiple of 16"):
        WindowGrid.plan(2000, 2000, 1000, 275)
    with pytest.raises(InputError, match="at least 16"):
        WindowGrid.plan(12, 2000, 1024, 275)
    grid = WindowGrid.plan(1037, 771, 1024, 275)
    assert (grid.padded_height, grid.padded_width) == (1040, 784)
    assert grid.margin == 288 and len(grid.rows) == 2 and len(grid.cols) == 1


def test_fixed_descriptors_from_the_stages_own_inputs_reproduce_the_forward():
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None).eval()
    t1, t2 = torch.randn(2, 3, 48, 64), torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        pooled = {}
        for stage in model.attention_stages:
            x = model.attention_input(t1, t2, stage, pooled=pooled)
            pooled[stage] = (x.mean(dim=(2, 3)), x.amax(dim=(2, 3)))  # per item: (B, C)
        fixed = model(t1, t2, pooled=pooled).stride1
        plain = model(t1, t2).stride1
        other = model(t1, t2, pooled={s: (p[0] + 1.0, p[1]) for s, p in pooled.items()}).stride1
    assert model.attention_stages == (1, 2, 3, 4)
    torch.testing.assert_close(fixed, plain, rtol=0, atol=1e-6)
    assert (other - plain).abs().max() > 1e-3  # the descriptors are really used


def test_receptive_radius_bounds_how_far_a_pixel_reaches():
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None).eval()
    radius = model.receptive_radius()
    assert radius == 275  # counted from the layers (see DSIFN.receptive_radius)
    width, probe = 16 * 40, 600
    t1, t2 = torch.randn(1, 3, 16, width), torch.randn(1, 3, 16, width)
    with torch.no_grad():
        pooled = {}
        for stage in model.attention_stages:
            x = model.attention_input(t1, t2, stage, pooled=pooled)
            pooled[stage] = (x.mean(dim=(2, 3)), x.amax(dim=(2, 3)))
        base = model(t1, t2, pooled=pooled).stride1[0, 0]
        moved = t2.clone()
        moved[..., probe] += 5.0
        changed = (model(t1, moved, pooled=pooled).stride1[0, 0] - base).abs().amax(dim=0) > 0
    reached = np.flatnonzero(changed.numpy())
    assert reached.size and probe - reached.min() <= radius and reached.max() <= probe + radius
    assert probe - reached.min() > 100  # the bound is not vacuous


def _calibrated_dsifn(t1: np.ndarray, t2: np.ndarray) -> DSIFN:
    # Random weights predict about 0.45 everywhere, which would hide any tiling error: set the
    # BatchNorm statistics from the scene itself so that the outputs spread out. Variances are
    # floored at 1e-3: near-constant channels (variance 1e-9) would amplify rounding so much
    # that even the memory layout changes the map by 0.6.
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None, dropout=0.0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    norm = model.config.input_normalization
    with torch.no_grad():
        model.train()
        model(norm(torch.from_numpy(t1 / SCALE))[None], norm(torch.from_numpy(t2 / SCALE))[None])
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert module.running_var is not None
            module.running_var.clamp_(min=1e-3)
    return model.eval()


def _whole_image(
    model: DSIFN, t1: np.ndarray, t2: np.ndarray, tta: bool, fast: bool = False
) -> np.ndarray:
    # The network on the whole scene: scaled, 0 where either date has no data, normalised, padded
    # by the model; nodata where either date is. fast: BatchNorm folded into the convolutions,
    # as TorchRunner runs it by default (the same map, rounded differently).
    norm = model.config.input_normalization
    valid1, valid2 = (t1 != 0).all(axis=0), (t2 != 0).all(axis=0)
    valid = valid1 & valid2
    a = norm(torch.from_numpy(np.where(valid, t1 / SCALE, 0.0).astype(np.float32)))[None]
    b = norm(torch.from_numpy(np.where(valid, t2 / SCALE, 0.0).astype(np.float32)))[None]
    # With TTA, each flip or rotation is of the scene padded to multiples of 16, as the tiles'.
    height, width = t1.shape[1:]
    pad = (0, -width % 16, 0, -height % 16)
    a, b = F.pad(a, pad, mode="reflect").numpy(), F.pad(b, pad, mode="reflect").numpy()
    total = np.zeros(a.shape[2:], dtype=np.float32)
    transforms = DIHEDRAL if tta else ((0, False),)
    runner = TorchRunner(model, device="cpu", precision="fp32", fast=fast)
    for turns, mirror in transforms:
        p = runner(apply_dihedral(a, turns, mirror), apply_dihedral(b, turns, mirror))
        total += invert_dihedral(p, turns, mirror)[0, 0]
    out = total[:height, :width] / len(transforms)
    out[~valid] = np.nan
    return out


def _scene(tmp_path, height, width):
    t1 = uint16_scene(1, height, width).astype(np.float32)
    t2 = uint16_scene(2, height, width).astype(np.float32)
    t2[:, height // 3 : height // 2] = t1[:, height // 3 : height // 2]  # some unchanged rows
    t1[:, 5:9, 3:7] = 0  # nodata
    paths = []
    for name, data in (("t1.tif", t1), ("t2.tif", t2)):
        paths.append(write_geotiff(tmp_path / name, data.astype(np.uint16)))
    return t1, t2, paths


def _read(path):
    with rasterio.open(path) as src:
        values = src.read(1)
    return np.where(values == -1.0, np.nan, values)


@pytest.mark.parametrize(("height", "width"), [(650, 21), (19, 667)])
def test_scene_attention_tiles_equal_the_whole_image(tmp_path, height, width):
    t1, t2, (p1, p2) = _scene(tmp_path, height, width)
    model = _calibrated_dsifn(t1, t2)
    runner = TorchRunner(model, device="cpu", precision="fp32")
    whole = _whole_image(model, t1, t2, tta=False)
    assert np.nanstd(whole) > 0.05  # outputs spread out, so an error would show

    result = predict_scene(
        runner, p1, p2, tmp_path / "scene.tif", attention="scene", tile_size=608,
        scale=SCALE, progress=False,
    )  # fmt: skip
    assert result.tiles >= 2 and result.tags["attention"] == "scene"
    tiled = _read(tmp_path / "scene.tif")
    np.testing.assert_array_equal(np.isnan(tiled), np.isnan(whole))
    np.testing.assert_allclose(tiled, whole, atol=1e-4, equal_nan=True)

    # Per-tile attention on the same windows does not match: the test can tell.
    predict_scene(
        runner, p1, p2, tmp_path / "tile.tif", tile_size=608, overlap=560 // 2, scale=SCALE,
        progress=False,
    )  # fmt: skip
    assert np.nanmax(np.abs(_read(tmp_path / "tile.tif") - whole)) > 1e-3


def test_scene_attention_with_tta_equals_the_whole_image_tta(tmp_path):
    t1, t2, (p1, p2) = _scene(tmp_path, 620, 16)
    model = _calibrated_dsifn(t1, t2)
    runner = TorchRunner(model, device="cpu", precision="fp32")
    predict_scene(
        runner, p1, p2, tmp_path / "scene.tif", attention="scene", tile_size=592, tta=True,
        batch_size=2, scale=SCALE, progress=False,
    )  # fmt: skip
    whole = _whole_image(model, t1, t2, tta=True)
    np.testing.assert_allclose(_read(tmp_path / "scene.tif"), whole, atol=1e-4, equal_nan=True)


def test_scene_attention_needs_a_model_that_can_fix_it(tmp_path):
    _, _, (p1, p2) = _scene(tmp_path, 40, 40)
    with pytest.raises(ConfigError, match="torch runtime"):
        predict_scene(LocalRunner(), p1, p2, tmp_path / "a.tif", attention="scene", scale=SCALE)
    keras = TorchRunner(DSIFN(variant="keras", input_size=32), device="cpu", precision="fp32")
    with pytest.raises(ConfigError, match="tiles only"):
        predict_scene(keras, p1, p2, tmp_path / "b.tif", attention="scene", scale=SCALE)
    with pytest.raises(ConfigError, match="overlap"):
        predict_scene(keras, p1, p2, tmp_path / "c.tif", attention="scene", overlap=8)
    assert not list(tmp_path.glob("?.tif"))


@pytest.mark.parametrize("fast", [False, True])
def test_scene_attention_on_a_grid_of_windows_equals_the_whole_image(tmp_path, monkeypatch, fast):
    # A little over one 592-px window a side (padded to 608): a 2x2 grid of windows, so corner
    # windows and a point where four cores meet, which the strips above do not have.
    # The trunk has an eighth of VGG16's widths: the same layers, pools, channel attention and
    # receptive radius (all that the windows depend on) at about 1/64 of the cost.
    narrow = tuple(w if w == "M" else w // 8 for w in vgg.VGG16_LAYOUT)
    monkeypatch.setattr(vgg, "VGG16_LAYOUT", narrow)
    height, width = 600, 597
    t1, t2, (p1, p2) = _scene(tmp_path, height, width)
    model = _calibrated_dsifn(t1, t2)
    assert model.receptive_radius() == 275
    # Folding BatchNorm (fast) moves this map by up to 1.4e-5 at full width: compare each
    # runner with the whole image computed the same way, so that only tiling can differ.
    runner = TorchRunner(model, device="cpu", precision="fp32", fast=fast)
    whole = _whole_image(model, t1, t2, tta=False, fast=fast)
    assert np.nanstd(whole) > 0.05  # outputs spread out, so an error would show

    result = predict_scene(
        runner, p1, p2, tmp_path / "scene.tif", attention="scene", tile_size=592, batch_size=2,
        scale=SCALE, progress=False,
    )  # fmt: skip
    grid = WindowGrid.plan(height, width, 592, runner.receptive_radius)
    assert (len(grid.rows), len(grid.cols)) == (2, 2) and result.tiles == 4
    tiled = _read(tmp_path / "scene.tif")
    np.testing.assert_array_equal(np.isnan(tiled), np.isnan(whole))
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5, equal_nan=True)  # README's bound

    # Per-tile attention on the same windows is far off: the comparison can tell.
    predict_scene(
        runner, p1, p2, tmp_path / "tile.tif", tile_size=592, overlap=288, scale=SCALE,
        progress=False,
    )  # fmt: skip
    assert np.nanmax(np.abs(_read(tmp_path / "tile.tif") - whole)) > 1e-3
