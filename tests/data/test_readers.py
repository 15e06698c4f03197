from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from dsifn.bands import parse_bands
from dsifn.data import ChangeDetectionDataset, DataConfig
from dsifn.data.readers import decode_mask, read_mask
from dsifn.errors import ConfigError, DataError, InputError
from dsifn.io.images import decode_pillow, open_image
from dsifn.scaling import ScalingRule
from fixtures.datasets import FOLDERS, build_layout, encode_mask, write_split
from fixtures.rasters import write_image


@pytest.mark.parametrize(
    ("coding", "suffix"),
    [
        ("0/1", ".png"),
        ("0/255", ".png"),
        ("0/255", ".tif"),
        ("0/255", ".bmp"),
        ("rgb", ".png"),
        ("rgb", ".tif"),
        ("palette", ".png"),
        ("0/1", ".tif"),
    ],
)
def test_every_mask_coding_reads_as_0_1(tmp_path, coding, suffix):
    written = build_layout(tmp_path, "levir", {"train": 2}, mask_suffix=suffix, coding=coding)
    dataset = ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "train")
    for i, (_, _, change) in enumerate(written["train"].values()):
        mask = dataset[i]["mask"]
        assert set(np.unique(mask.numpy())) <= {0.0, 1.0}
        np.testing.assert_array_equal(mask[0].numpy(), change.astype(np.float32))


def test_jpeg_masks_survive_compression_noise(tmp_path):
    # CDD ships its masks as JPEG: the zeros come back as small values near edges.
    rng = np.random.default_rng(3)
    change = np.zeros((32, 32), dtype=bool)
    change[5:20, 7:25] = True
    path = tmp_path / "m.jpg"
    Image.fromarray(change.astype(np.uint8) * 255).save(path, quality=60)
    assert np.asarray(Image.open(path)).max() != np.asarray(Image.open(path)).min()
    noisy = np.asarray(Image.open(path))
    assert ((noisy > 0) != change).any()  # ">0" alone would be wrong here
    mask, valid = read_mask(path)
    np.testing.assert_array_equal(mask[0], change)
    assert valid.all()
    del rng


def test_decode_mask_ignore_value_marks_pixels_not_valid_and_not_change():
    raw = np.array([[[0, 1, 255], [1, 0, 255]]], dtype=np.uint8)
    mask, valid = decode_mask(raw, ignore_value=255)
    np.testing.assert_array_equal(mask, [[[0, 1, 0], [1, 0, 0]]])
    np.testing.assert_array_equal(valid, [[[True, True, False], [True, True, False]]])


def test_decode_mask_colour_is_change_where_any_channel_is_above_zero():
    raw = np.zeros((3, 1, 4), dtype=np.uint8)
    raw[0, 0, 1] = 255
    raw[2, 0, 2] = 1
    raw[:, 0, 3] = 9
    mask, _ = decode_mask(raw, ignore_value=9)
    np.testing.assert_array_equal(mask, [[[0, 1, 1, 0]]])


def test_ignore_value_reaches_the_valid_map(tmp_path):
    written = build_layout(tmp_path, "levir", {"train": 1}, coding="0/1")
    label = tmp_path / "train" / "label" / "tile_0.png"
    raw = np.asarray(Image.open(label)).copy()
    raw[:4, :] = 255
    Image.fromarray(raw).save(label)
    sample = ChangeDetectionDataset(DataConfig(root=str(tmp_path), ignore_value=255), "train")[0]
    change = written["train"]["tile_0"][2]
    assert not sample["valid"][0, :4].any()
    assert sample["valid"][0, 4:].all()
    np.testing.assert_array_equal(sample["mask"][0, 4:].numpy(), change[4:])
    assert not sample["mask"][0, :4].any()


def test_uint16_four_band_geotiffs_with_band_selection_scale_and_nodata(tmp_path):
    rng = np.random.default_rng(7)
    folders = tuple(tmp_path / "train" / n for n in FOLDERS["levir"])
    t1 = rng.integers(0, 10000, (4, 32, 32), dtype=np.uint16)
    t2 = rng.integers(0, 10000, (4, 32, 32), dtype=np.uint16)
    t2[:, 0, :5] = 65535  # nodata strip on every band
    write_image(folders[0] / "scene.tif", t1, nodata=65535)
    write_image(folders[1] / "scene.tif", t2, nodata=65535)
    write_image(folders[2] / "scene.tif", np.zeros((32, 32), dtype=np.uint8))

    default = ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "train")
    assert default.bands == 4
    expected = t1 / 65535.0
    expected[:, 0, :5] = 0  # T2 has no data there, so the pair has none
    np.testing.assert_allclose(default[0]["image"][0].numpy(), expected, rtol=1e-6)

    config = DataConfig(root=str(tmp_path), bands=(4, 3, 2), scale=10000.0)
    dataset = ChangeDetectionDataset(config, "train")
    sample = dataset[0]
    assert dataset.bands == 3
    assert sample["image"].shape == (2, 3, 32, 32)
    np.testing.assert_allclose(
        sample["image"][0, :, 1:].numpy(), t1[[3, 2, 1], 1:] / 10000.0, rtol=1e-6
    )
    assert not sample["valid"][0, 0, :5].any()
    assert sample["valid"][0, 0, 5:].all() and sample["valid"][0, 1:].all()
    assert (sample["image"][:, :, 0, :5] == 0).all()


def test_band_beyond_the_file_is_refused_when_the_dataset_is_made(tmp_path):
    build_layout(tmp_path, "levir", {"train": 1})
    with pytest.raises(InputError, match=r"has 3 band\(s\); band 5 is out of range 1\.\.3"):
        ChangeDetectionDataset(DataConfig(root=str(tmp_path), bands=(1, 5)), "train")


def _scale(values, scale=None, stretch=None):
    rule = ScalingRule.of(scale, stretch)
    return rule.resolve(values.dtype, values.shape[0], lambda: [values, values])(values)


def test_scaling_rules():
    np.testing.assert_allclose(_scale(np.array([[0, 51, 255]], np.uint8)), [[0, 0.2, 1]])
    np.testing.assert_allclose(_scale(np.array([[0, 65535]], np.uint16)), [[0, 1]])
    np.testing.assert_allclose(
        _scale(np.array([[0, 5000, 12000]], np.uint16), 10000), [[0, 0.5, 1]]
    )
    floats = np.array([[-0.5, 0.25, 1.5]], np.float32)
    np.testing.assert_array_equal(_scale(floats), floats)  # taken as they are
    np.testing.assert_allclose(_scale(floats, 2.0), [[0, 0.125, 0.75]])
    ramp = np.arange(101, dtype=np.uint16)[None]
    np.testing.assert_allclose(
        _scale(ramp, stretch=(10, 90))[0, [0, 10, 50, 90, 100]], [0, 0, 0.5, 1, 1], atol=1e-6
    )


@pytest.mark.parametrize(
    ("scale", "stretch"),
    [
        (0.0, None),
        (float("inf"), None),
        (float("nan"), None),
        (None, (50, 50)),
        (None, (2, 101)),
        (10.0, (2, 98)),
    ],
)
def test_scaling_rules_refuse_values_that_make_no_sense(scale, stretch):
    with pytest.raises(ConfigError):
        ScalingRule.of(scale, stretch)


def test_band_lists_parse_one_way():
    assert parse_bands("4,3,2") == (4, 3, 2)
    assert parse_bands(" 1, 2 ") == (1, 2)
    assert parse_bands([3, "1"]) == (3, 1)
    for bad in ("", "0,1", "a,b", "4;3"):
        with pytest.raises(ConfigError, match="1-based band numbers"):
            parse_bands(bad)
    assert DataConfig(bands="4,3,2").bands == (4, 3, 2)


def test_band_selection_is_one_based_and_ordered(tmp_path):
    data = (np.arange(4)[:, None, None] * np.ones((4, 2, 2))).astype(np.uint16)
    write_image(tmp_path / "four.tif", data)
    with open_image(tmp_path / "four.tif", bands=(4, 1)) as source:
        assert source.read_all()[0][:, 0, 0].tolist() == [3, 0]
    with open_image(tmp_path / "four.tif") as source:
        assert source.count == 4 and source.dtype == "uint16"


def test_grey_images_with_alpha_and_16_bit_png(tmp_path):
    grey = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(grey).save(tmp_path / "g16.png")
    with open_image(tmp_path / "g16.png") as source:
        values, valid = source.read_all()
    assert values.dtype == np.uint16 and values.shape == (1, 8, 8) and valid.all()
    np.testing.assert_array_equal(values[0], grey)

    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., :3] = 90
    rgba[..., 3] = 255
    rgba[0, 0, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    with open_image(tmp_path / "rgba.png") as source:
        values, valid = source.read_all()
    assert values.shape == (3, 8, 8)  # alpha is not a band
    assert (~valid).sum() == 1 and not valid[0, 0]


def test_plain_tiff_reads_without_georeference_warning(tmp_path):
    path = tmp_path / "plain.tif"
    Image.fromarray(np.full((8, 8), 7, dtype=np.uint8)).save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with open_image(path) as source:
            assert source.read_all()[0][0, 0, 0] == 7


def test_unreadable_file_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png is not a readable image"):
        open_image(path)
    tif = tmp_path / "broken.tif"
    tif.write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match=r"broken\.tif is not a readable raster"):
        open_image(tif)
    with pytest.raises(InputError, match="is a folder, not a file"):
        open_image(tmp_path)


def test_single_band_images(tmp_path):
    folders = tuple(tmp_path / "train" / n for n in FOLDERS["levir"])
    written = write_split(folders, 1, bands=1)
    sample = ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "train")[0]
    t1, _, _ = written["tile_0"]
    assert sample["image"].shape == (2, 1, 32, 32)
    np.testing.assert_allclose(sample["image"][0].numpy(), t1 / 255.0, atol=1e-6)


def test_palette_files_give_indices_to_masks_and_colours_to_images(tmp_path):
    change = np.eye(4, dtype=bool)
    encode_mask(change, "palette").save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    indices, _ = decode_pillow(tmp_path / "p.png", keep_palette=True)
    np.testing.assert_array_equal(indices[0], change.astype(np.uint8))
    # An image (not a mask) in palette mode is read as its colours.
    with open_image(tmp_path / "p.png") as source:
        colours = source.read_all()[0]
    assert colours.shape == (3, 4, 4)
    np.testing.assert_array_equal(colours[:, 0, 0], [255, 255, 0])
    np.testing.assert_array_equal(colours[:, 0, 1], [0, 0, 0])


@pytest.mark.parametrize(
    ("mode", "bands", "dtype"),
    [
        ("1", 1, np.uint8),
        ("L", 1, np.uint8),
        ("LA", 1, np.uint8),
        ("P", 3, np.uint8),
        ("RGB", 3, np.uint8),
        ("RGBA", 3, np.uint8),
        ("CMYK", 3, np.uint8),
        ("YCbCr", 3, np.uint8),
        ("I;16", 1, np.uint16),
        ("F", 1, np.float32),
    ],
)
def test_every_pillow_mode_reads_through_the_one_reader(tmp_path, mode, bands, dtype):
    base = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).convert("RGB")
    image = base.convert(mode) if mode not in ("I;16", "F") else base.convert("L")
    if mode in ("I;16", "I", "F"):
        values = np.arange(64).reshape(8, 8) * 1000
        image = Image.fromarray(
            values.astype({"I;16": np.uint16, "I": np.int32}.get(mode, np.float32))
        )
    if mode in ("LA", "RGBA"):
        image.putpixel((1, 0), (0,) * len(mode))  # one transparent pixel
    suffix = {"F": ".tif", "CMYK": ".jpg", "YCbCr": ".jpg"}.get(mode, ".png")
    path = tmp_path / f"image{suffix}"
    image.save(path)
    with open_image(path) as source:
        values, valid = source.read_all()
    assert values.shape == (bands, 8, 8) and values.dtype == dtype
    assert valid.sum() == (63 if mode in ("LA", "RGBA") else 64)
    if mode == "I;16":
        np.testing.assert_array_equal(values[0], np.arange(64).reshape(8, 8) * 1000)


def test_nan_pixels_are_nodata_pixel_by_pixel(tmp_path):
    folders = tuple(tmp_path / "train" / n for n in FOLDERS["levir"])
    t1 = np.full((2, 8, 8), 0.5, dtype=np.float32)
    t1[1, 2, 3] = np.nan  # one band of one pixel
    write_image(folders[0] / "a.tif", t1)
    write_image(folders[1] / "a.tif", np.full((2, 8, 8), 0.25, dtype=np.float32))
    write_image(folders[2] / "a.tif", np.zeros((8, 8), dtype=np.uint8))
    sample = ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "train")[0]
    assert not sample["valid"][0, 2, 3] and sample["valid"].sum() == 63
    assert np.isfinite(sample["image"].numpy()).all() and sample["image"][0, 0, 0, 0] == 0.5
