from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from dsifn.data import DataConfig, check_splits, compute_band_stats
from dsifn.errors import DataError
from fixtures.datasets import FOLDERS, build_layout
from fixtures.rasters import write_image


def data(root, **options):
    return DataConfig(root=str(root), **options)


def test_a_clean_dataset_passes_without_warnings(tmp_path, recwarn):
    build_layout(tmp_path, "levir")
    assert check_splits(data(tmp_path), progress=False) == []
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]


def test_missing_partner_size_mismatch_and_unreadable_file_in_one_message(tmp_path):
    build_layout(tmp_path, "levir", {"train": 4, "test": 2})
    (tmp_path / "train" / "B" / "tile_0.png").unlink()
    Image.new("RGB", (32, 30)).save(tmp_path / "train" / "B" / "tile_1.png")
    Image.new("L", (31, 32)).save(tmp_path / "train" / "label" / "tile_2.png")
    (tmp_path / "test" / "A" / "tile_1.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DataError) as info:
        check_splits(data(tmp_path), progress=False)
    message = str(info.value)
    assert message.startswith(f"dataset {tmp_path} is not usable: 4 problem(s): ")
    assert "train/tile_0: no file in B" in message
    assert "train/tile_1: the dates differ: 3 band(s) 32x32" in message
    assert "3 band(s) 32x30" in message
    assert "train/tile_2: mask 31x32" in message and "but images 32x32" in message
    assert "test/tile_1: T1 file" in message and "tile_1.png is not a readable image" in message
    assert "\n" not in message


def test_many_offenders_are_counted_after_the_first_five(tmp_path):
    build_layout(tmp_path, "levir", {"train": 8})
    for i in range(7):
        (tmp_path / "train" / "label" / f"tile_{i}.png").unlink()
    with pytest.raises(DataError) as info:
        check_splits(data(tmp_path), progress=False)
    message = str(info.value)
    assert "7 problem(s)" in message
    assert message.count("no file in label") == 5
    assert message.endswith("; and 2 more")


def test_band_count_differs_between_dates(tmp_path):
    build_layout(tmp_path, "levir", {"train": 1})
    Image.new("L", (32, 32)).save(tmp_path / "train" / "B" / "tile_0.png")
    with pytest.raises(DataError, match=r"1 band\(s\) 32x32"):
        check_splits(data(tmp_path), progress=False)


def test_missing_splits_are_skipped(tmp_path):
    build_layout(tmp_path, "levir", {"train": 2})
    assert check_splits(data(tmp_path), ("train", "val", "test"), progress=False) == []


def test_identical_images_across_splits_are_named_in_a_warning(tmp_path):
    build_layout(tmp_path, "dsifn", {"train": 3, "val": 1, "test": 2})
    for folder in FOLDERS["dsifn"]:  # a test tile leaked into train under another name
        shutil.copy(
            tmp_path / "test" / folder / "tile_1.png", tmp_path / "train" / folder / "copy.png"
        )
    with pytest.warns(UserWarning, match="identical pixels") as record:
        warnings = check_splits(data(tmp_path), progress=False)
    assert warnings == [
        "1 pair(s) of test also in train (identical pixels): test/tile_1 = train/copy"
    ]
    assert [str(w.message) for w in record if "identical" in str(w.message)] == warnings


def test_band_stats_match_numpy_on_the_same_files(tmp_path):
    written = build_layout(tmp_path, "levir", {"train": 3, "test": 1})
    mean, std = compute_band_stats(data(tmp_path), "train", progress=False)
    pixels = (
        np.concatenate([np.stack([t1, t2]) for t1, t2, _ in written["train"].values()]).astype(
            np.float64
        )
        / 255.0
    )  # (2 * pairs, C, H, W)
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 2, 3)), rtol=1e-6)


def test_band_stats_with_bands_scale_nodata_and_max_images(tmp_path):
    rng = np.random.default_rng(11)
    folders = tuple(tmp_path / "train" / n for n in FOLDERS["levir"])
    arrays = []
    for i in range(5):
        t1 = rng.integers(0, 4000, (4, 16, 16), dtype=np.uint16)
        t2 = rng.integers(0, 4000, (4, 16, 16), dtype=np.uint16)
        t1[:, :2, :] = 0  # nodata rows
        write_image(folders[0] / f"{i}.tif", t1, nodata=0)
        write_image(folders[1] / f"{i}.tif", t2, nodata=0)
        write_image(folders[2] / f"{i}.tif", np.zeros((16, 16), np.uint8))
        arrays.append((t1, t2))
    config = data(tmp_path, bands=(3, 1), scale=4000.0)
    mean, std = compute_band_stats(config, "train", max_images=3, progress=False)
    used = [arrays[i] for i in (0, 2, 4)]  # spread evenly over the split
    values = np.concatenate([np.stack([t1, t2])[:, [2, 0], 2:, :] for t1, t2 in used]) / 4000.0
    np.testing.assert_allclose(mean, values.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(std, values.std(axis=(0, 2, 3)), rtol=1e-6)


def test_band_stats_of_a_missing_split(tmp_path):
    build_layout(tmp_path, "levir", {"train": 1})
    with pytest.raises(DataError, match="split 'val' not found"):
        compute_band_stats(data(tmp_path), "val", progress=False)
