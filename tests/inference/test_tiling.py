import itertools

import numpy as np
import pytest
import torch
from torch import nn

from dsifn.errors import ConfigError
from dsifn.inference.tiling import (
    DIHEDRAL,
    StripBlender,
    TileGrid,
    apply_dihedral,
    axis_starts,
    axis_weights,
    invert_dihedral,
    pad_tile,
)


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "expected"),
    [
        (100, 100, 10, [0]),
        (50, 100, 10, [0]),
        (101, 100, 10, [0, 1]),
        (250, 100, 20, [0, 80, 150]),
        (260, 100, 20, [0, 80, 160]),
        (300, 100, 0, [0, 100, 200]),
    ],
)
def test_axis_starts_cover_the_axis_with_the_last_tile_flush(length, tile, overlap, expected):
    starts = axis_starts(length, tile, overlap)
    assert starts == expected
    assert starts[-1] + min(tile, length) == max(length, min(tile, length))
    for a, b in itertools.pairwise(starts):
        assert b - a <= tile - overlap  # neighbours overlap at least `overlap`


def test_axis_starts_refuse_bad_overlap():
    with pytest.raises(ConfigError, match="overlap"):
        axis_starts(100, 32, 32)


def test_ramps_of_neighbours_sum_to_one_and_vanish_at_inner_edges():
    tile, overlap, length = 64, 16, 112
    left = axis_weights(0, tile, length, overlap)
    right = axis_weights(48, tile, length, overlap)
    assert left[0] == 1.0 and right[-1] == 1.0  # scene border keeps full weight
    assert right[: overlap // 4].max() == 0.0  # inner edge margin is dropped
    assert left[-(overlap // 4) :].max() == 0.0
    np.testing.assert_allclose(left[48:64] + right[:16], 1.0, atol=1e-12)


def test_grid_plan_shrinks_or_pads_for_small_scenes():
    free = TileGrid.plan(40, 300, 128, 16)
    assert (free.tile_height, free.tile_width) == (40, 128)
    assert free.row_starts == (0,) and free.col_starts[-1] == 300 - 128
    fixed = TileGrid.plan(40, 300, 128, 16, fixed=True)
    assert (fixed.tile_height, fixed.tile_width) == (128, 128)
    tiny = TileGrid.plan(5, 7, 128, 16)
    assert (tiny.tile_height, tiny.tile_width) == (16, 16)
    with pytest.raises(ConfigError, match="half the tile"):
        TileGrid.plan(100, 100, 64, 40)


def test_pad_tile_mirrors_to_the_requested_size():
    x = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    padded = pad_tile(x, 4, 5)
    assert padded.shape == (1, 4, 5)
    np.testing.assert_array_equal(padded[:, :2, :3], x)
    np.testing.assert_array_equal(padded[0, 2, :3], x[0, 1])


def _local_net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 1, 3, padding=1)
    ).eval()


@pytest.mark.parametrize(("height", "width"), [(203, 157), (64, 300), (30, 20)])
def test_blended_tiles_equal_the_whole_image_for_a_local_model(height, width):
    net = _local_net()
    image = torch.rand(1, 1, height, width)
    with torch.no_grad():
        whole = net(image)[0, 0].numpy()
    grid = TileGrid.plan(height, width, 64, 16)
    blender = StripBlender(grid)
    out = np.full((height, width), np.nan, dtype=np.float32)
    rows_seen = []

    def take(pieces):
        for first, values in pieces:
            rows_seen.append((first, values.shape[0]))
            out[first : first + values.shape[0]] = values

    for row in grid.row_starts:
        take(blender.start_row(row))
        for col in grid.col_starts:
            tile = image[..., row : row + grid.tile_height, col : col + grid.tile_width]
            with torch.no_grad():
                pred = net(tile)[0, 0].numpy()
            blender.add(row, col, pred)
    take(blender.finish())
    # Rows come out once each, in order, covering the scene.
    assert sum(n for _, n in rows_seen) == height
    assert [f for f, _ in rows_seen] == sorted(f for f, _ in rows_seen)
    np.testing.assert_allclose(out, whole, atol=1e-4)


def test_a_seam_appears_without_the_edge_margin():
    # Control: averaging with flat weights shows the zero-padding artefact the margin removes.
    net = _local_net()
    image = torch.rand(1, 1, 64, 100)
    with torch.no_grad():
        whole = net(image)[0, 0].numpy()
        left = net(image[..., :, :64])[0, 0].numpy()
        right = net(image[..., :, 36:])[0, 0].numpy()
    flat = np.zeros_like(whole)
    count = np.zeros_like(whole)
    flat[:, :64] += left
    count[:, :64] += 1
    flat[:, 36:] += right
    count[:, 36:] += 1
    assert np.abs(flat / count - whole).max() > 1e-3


@pytest.mark.parametrize(("turns", "mirror"), DIHEDRAL)
def test_dihedral_transforms_invert(turns, mirror):
    x = np.random.default_rng(0).random((2, 3, 5, 7)).astype(np.float32)
    y = apply_dihedral(x, turns, mirror)
    assert y.shape[-2:] == ((5, 7) if turns % 2 == 0 else (7, 5))
    np.testing.assert_array_equal(invert_dihedral(y, turns, mirror), x)


def test_dihedral_set_has_eight_distinct_symmetries():
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    images = {apply_dihedral(x, t, m).tobytes() for t, m in DIHEDRAL}
    assert len(images) == 8
