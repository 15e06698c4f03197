from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dsifn.data import AugmentConfig
from dsifn.data.augment import (
    augment_sample,
    hue_rotation_matrix,
    joint_transform,
    photometric,
    random_crop,
    sample_generator,
)

ALL_ON = AugmentConfig(
    hflip=0.5,
    vflip=0.5,
    rotate90=0.5,
    scale=(0.75, 1.5),
    brightness=0.3,
    contrast=0.3,
    hue=0.2,
    blur=0.5,
    noise=0.05,
)


def coordinate_sample(height=24, width=24):
    """Dates whose pixels encode their own (row, column); the mask is a function of them."""
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    code = torch.stack([rows / height, cols / width, (rows * width + cols) / (height * width)])
    image = torch.stack([code, code.clone()])
    mask = ((rows.long() * 7 + cols.long() * 3) % 5 == 0).float()[None]
    valid = (cols < width - 2)[None]
    return image, mask, valid


def test_joint_transforms_keep_dates_mask_and_valid_aligned():
    geometric = AugmentConfig(hflip=0.5, vflip=0.5, rotate90=0.9)
    image, mask, valid = coordinate_sample()
    seen = set()
    for index in range(40):
        generator = sample_generator(0, 0, index)
        out, out_mask, out_valid = joint_transform(image, mask, valid, geometric, generator, 16)
        assert out.shape == (2, 3, 16, 16) and out_mask.shape == out_valid.shape == (1, 16, 16)
        torch.testing.assert_close(out[0], out[1])  # both dates moved the same way
        rows = (out[0, 0] * 24).round().long()
        cols = (out[0, 1] * 24).round().long()
        # Every output pixel's label is the label of the input pixel it came from.
        torch.testing.assert_close(out_mask[0], mask[0, rows, cols])
        torch.testing.assert_close(out_valid[0], valid[0, rows, cols])
        seen.add((int(rows[0, 0]), int(cols[0, 0]), int(rows[0, 1]), int(cols[0, 1])))
    assert len(seen) > 20  # crops, flips and turns really vary


def test_rescaled_crop_keeps_labels_on_the_pixels_they_came_from():
    # Doubling: each output pixel decodes (by rounding) to the source pixel it was
    # interpolated around, and nearest-exact labels come from that same pixel.
    config = AugmentConfig(hflip=0.5, vflip=0.5, rotate90=0.5, scale=(2.0, 2.0))
    image, mask, valid = coordinate_sample()
    for index in range(10):
        out, out_mask, out_valid = joint_transform(
            image, mask, valid, config, sample_generator(1, 0, index), 16
        )
        assert out.shape == (2, 3, 16, 16)
        rows = (out[0, 0] * 24).round().long()
        cols = (out[0, 1] * 24).round().long()
        assert int(rows.max() - rows.min()) == 7  # a window of 8 source pixels, doubled
        torch.testing.assert_close(out_mask[0], mask[0, rows, cols])
        torch.testing.assert_close(out_valid[0], valid[0, rows, cols])


def test_augment_sample_moves_the_mask_with_the_change_it_describes():
    # T2's first band is bright exactly where the mask is 1; after any augmentation the
    # mask must still sit on the bright pixels.
    torch.manual_seed(1)
    t1 = torch.rand(3, 32, 32) * 0.4
    t2 = torch.rand(3, 32, 32) * 0.4
    mask = torch.zeros(1, 32, 32)
    mask[0, 4:14, 6:20] = 1
    mask[0, 20:28, 2:9] = 1
    t2[0][mask[0] > 0] = 1.0
    image = torch.stack([t1, t2])
    valid = torch.ones(1, 32, 32, dtype=torch.bool)
    geometric_only = AugmentConfig(hflip=0.5, vflip=0.5, rotate90=0.5, scale=(1.0, 1.0))
    for index in range(20):
        out, out_mask, _ = augment_sample(
            image, mask, valid, geometric_only, sample_generator(3, 1, index), 24
        )
        torch.testing.assert_close(out_mask[0], (out[1, 0] > 0.7).float())
    # Joint draws come first, so switching the photometric part off keeps the geometry: the
    # full augmentation moves the mask exactly as the geometric one, whose images show where.
    geometry_of_all_on = dataclasses.replace(
        ALL_ON, brightness=0.0, contrast=0.0, hue=0.0, blur=0.0, noise=0.0
    )
    for index in range(20):
        _, out_mask, _ = augment_sample(
            image, mask, valid, ALL_ON, sample_generator(3, 1, index), 24
        )
        moved, moved_mask, _ = augment_sample(
            image, mask, valid, geometry_of_all_on, sample_generator(3, 1, index), 24
        )
        assert torch.equal(out_mask, moved_mask)
        assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
        # Rescaling interpolates the images: only pixels on an edge may disagree.
        agree = (out_mask[0] == (moved[1, 0] > 0.7).float()).float().mean()
        assert agree > 0.9


def test_photometric_changes_the_dates_independently_and_never_the_mask():
    image, mask, valid = coordinate_sample()
    config = AugmentConfig(
        hflip=0, vflip=0, rotate90=0, brightness=0.3, contrast=0.3, hue=0.1, blur=1.0, noise=0.02
    )
    out, out_mask, out_valid = augment_sample(image, mask, valid, config, sample_generator(0, 0, 0))
    assert torch.equal(out_mask, mask) and torch.equal(out_valid, valid)
    assert not torch.allclose(out[0], image[0], atol=1e-3)
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # each date drew its own changes
    assert out.min() >= 0 and out.max() <= 1


def test_everything_off_is_the_identity():
    image, mask, valid = coordinate_sample()
    out, out_mask, out_valid = augment_sample(
        image, mask, valid, AugmentConfig.off(), sample_generator(0, 0, 0)
    )
    assert torch.equal(out, image) and torch.equal(out_mask, mask) and torch.equal(out_valid, valid)


def test_rotation_of_a_non_square_image_keeps_its_shape():
    image, mask, valid = coordinate_sample(16, 24)
    config = AugmentConfig(hflip=0, vflip=0, rotate90=1.0)
    for index in range(5):
        out, _, _ = joint_transform(image, mask, valid, config, sample_generator(0, 0, index))
        assert out.shape == image.shape
        torch.testing.assert_close(out, image.flip(-1, -2))  # 180 degrees


def test_crop_larger_than_the_image_pads_with_invalid_pixels():
    image, mask, valid = coordinate_sample(12, 12)
    out, _, out_valid = random_crop(image, mask, valid, 16, sample_generator(0, 0, 0))
    assert out.shape == (2, 3, 16, 16)
    assert not out_valid[0, 12:].any() and not out_valid[0, :, 12:].any()
    assert torch.equal(out[..., :12, :12], image)


def test_rescale_changes_size_before_the_crop_and_keeps_labels_binary():
    image, mask, valid = coordinate_sample()
    config = AugmentConfig(hflip=0, vflip=0, rotate90=0, scale=(2.0, 2.0))
    out, out_mask, out_valid = joint_transform(
        image, mask, valid, config, sample_generator(0, 0, 0)
    )
    assert out.shape == (2, 3, 48, 48) and out_mask.shape == (1, 48, 48)
    assert set(out_mask.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(out_mask[0, ::2, ::2], mask[0])
    assert out_valid.dtype == torch.bool


def test_generator_is_a_pure_function_of_seed_epoch_index():
    def draw(*key):
        return torch.rand(4, generator=sample_generator(*key))

    torch.testing.assert_close(draw(1, 2, 3), draw(1, 2, 3))
    assert not torch.equal(draw(1, 2, 3), draw(1, 3, 3))
    assert not torch.equal(draw(1, 2, 3), draw(1, 2, 4))
    assert not torch.equal(draw(1, 2, 3), draw(2, 2, 3))


def test_hue_rotation_keeps_grey_and_turns_red_to_green():
    matrix = hue_rotation_matrix(1 / 3)
    torch.testing.assert_close(
        matrix @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    )
    grey = torch.full((3,), 0.4)
    for turns in (0.1, -0.25, 0.5):
        torch.testing.assert_close(hue_rotation_matrix(turns) @ grey, grey)
    torch.testing.assert_close(hue_rotation_matrix(0.0), torch.eye(3))


def test_noise_has_about_the_drawn_strength():
    config = AugmentConfig(hflip=0, vflip=0, rotate90=0, noise=0.1)
    flat = torch.full((1, 64, 64), 0.5)
    spreads = [
        float((photometric(flat, config, sample_generator(0, 0, i)) - 0.5).std()) for i in range(30)
    ]
    assert max(spreads) <= 0.1 * 1.1
    assert 0.02 < sum(spreads) / len(spreads) < 0.08  # uniform in [0, 0.1]: mean 0.05


@pytest.mark.parametrize(
    "bad",
    [
        {"hflip": 1.5},
        {"scale": (1.2, 0.8)},
        {"noise": -0.1},
        {"blur_sigma": (0.0, 1.0)},
        {"brightness": 2.0},
    ],
)
def test_bad_augment_values_are_config_errors(bad):
    from dsifn.errors import ConfigError

    with pytest.raises(ConfigError):
        AugmentConfig(**bad)


def test_blur_smooths_an_edge():
    config = AugmentConfig(hflip=0, vflip=0, rotate90=0, blur=1.0, blur_sigma=(1.0, 1.0))
    step = torch.zeros(1, 8, 8)
    step[..., 4:] = 1
    out = photometric(step, config, sample_generator(0, 0, 0))
    assert 0 < float(out[0, 0, 3]) < 0.5 < float(out[0, 0, 4]) < 1
    torch.testing.assert_close(out.sum(), step.sum(), atol=1e-4, rtol=0)  # reflect keeps mass
    assert math.isclose(float(out[0, 0, 0]), 0.0, abs_tol=1e-3)
