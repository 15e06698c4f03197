from __future__ import annotations

import numpy as np
import pytest
import torch

from dsifn.data import ChangeDetectionDataset, DataConfig, detect_layout
from dsifn.data.layouts import pair_names
from dsifn.errors import ConfigError, DataError
from fixtures.datasets import FOLDERS, build_layout, write_split

TITLES = {
    "dsifn": "DSIFN-CD layout (t1/t2/mask)",
    "levir": "LEVIR-CD / WHU-CD style layout (A/B/label)",
    "cdd": "CDD layout (A/B/OUT)",
    "cdd-subset": "CDD layout (A/B/OUT)",
    "sysu": "SYSU-CD layout (time1/time2/label)",
    "s2looking": "S2Looking layout (Image1/Image2/label)",
    "list": "list-file layout (A/B/label with list/*.txt)",
}


def _expected_name(layout):
    return "cdd" if layout == "cdd-subset" else layout


@pytest.mark.parametrize("layout", sorted(TITLES))
def test_every_layout_is_detected_and_read(tmp_path, layout):
    written = build_layout(tmp_path, layout)
    found = detect_layout(tmp_path)
    assert found.name == _expected_name(layout)
    assert list(found.splits) == ["train", "val", "test"]
    assert found.describe() == (
        f"found {TITLES[layout]} in {tmp_path} with splits train (3 pairs), val (2), test (2)"
    )
    for split, pairs in written.items():
        dataset = ChangeDetectionDataset(DataConfig(root=str(tmp_path)), split)
        assert dataset.names == list(pairs)
        assert dataset.bands == 3
        for i, (t1, t2, change) in enumerate(pairs.values()):
            sample = dataset[i]
            assert sample["image"].shape == (2, 3, 32, 32)
            assert sample["image"].dtype == torch.float32
            np.testing.assert_allclose(sample["image"][0].numpy(), t1 / 255.0, atol=1e-6)
            np.testing.assert_allclose(sample["image"][1].numpy(), t2 / 255.0, atol=1e-6)
            assert sample["mask"].shape == (1, 32, 32)
            np.testing.assert_array_equal(sample["mask"][0].numpy(), change.astype(np.float32))
            assert sample["valid"].dtype == torch.bool and bool(sample["valid"].all())


def test_named_layout_is_used_and_a_wrong_name_lists_what_was_looked_for(tmp_path):
    build_layout(tmp_path, "sysu")
    assert detect_layout(tmp_path, "sysu").name == "sysu"
    with pytest.raises(DataError) as info:
        detect_layout(tmp_path, "levir")
    message = str(info.value)
    assert "A/B/label (LEVIR-CD / WHU-CD style)" in message
    assert "generic" in message


def test_whu_is_levir_layout_by_another_name(tmp_path):
    build_layout(tmp_path, "levir", {"train": 1})
    found = detect_layout(tmp_path, "whu")
    assert found.name == "whu"
    assert "LEVIR-CD / WHU-CD style" in found.describe()


def test_nothing_fits_lists_every_layout_looked_for(tmp_path):
    (tmp_path / "train" / "before").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        detect_layout(tmp_path)
    message = str(info.value)
    for names in FOLDERS.values():
        assert "/".join(names) in message
    assert "list/*.txt" in message
    assert "\n" not in message


def test_missing_root_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="data folder not found"):
        detect_layout(tmp_path / "absent")


def test_missing_splits_are_simply_absent(tmp_path):
    build_layout(tmp_path, "levir", {"train": 2, "test": 1})
    found = detect_layout(tmp_path)
    assert list(found.splits) == ["train", "test"]
    with pytest.raises(DataError, match=r"split 'val' not found .* found: train, test"):
        ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "val")


def test_split_aliases_and_folder_case_are_accepted(tmp_path):
    folders = tuple(tmp_path / "Validation" / name for name in ("a", "b", "LABEL"))
    write_split(folders, 2)
    found = detect_layout(tmp_path)
    assert found.name == "levir"
    assert list(found.splits) == ["val"]
    assert len(ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "validation")) == 2


def test_generic_layout_with_split_folders(tmp_path):
    for split, count in (("train", 2), ("test", 1)):
        write_split(tuple(tmp_path / split / n for n in ("before", "after", "truth")), count)
    found = detect_layout(tmp_path, folders=("before", "after", "truth"))
    assert found.name == "generic"
    assert found.describe().startswith("found generic layout (before/after/truth)")
    assert list(found.splits) == ["train", "test"]
    config = DataConfig(root=str(tmp_path), layout="generic", folders=("before", "after", "truth"))
    assert ChangeDetectionDataset(config, "train").names == ["tile_0", "tile_1"]


def test_generic_layout_directly_under_root_is_one_split_called_all(tmp_path):
    write_split(tuple(tmp_path / n for n in ("before", "after", "truth")), 3)
    found = detect_layout(tmp_path, "generic", ("before", "after", "truth"))
    assert list(found.splits) == ["all"]
    assert found.describe().endswith("with split all (3 pairs)")


def test_generic_layout_needs_folders_and_named_layouts_refuse_them(tmp_path):
    build_layout(tmp_path, "levir", {"train": 1})
    with pytest.raises(ConfigError, match="folders"):
        detect_layout(tmp_path, "generic")
    with pytest.raises(ConfigError, match="generic"):
        detect_layout(tmp_path, "levir", ("A", "B", "label"))
    with pytest.raises(ConfigError, match="'auto'"):
        detect_layout(tmp_path, "kaggle")


def test_dsifn_test_masks_as_tif_pair_by_name_without_extension(tmp_path):
    folders = tuple(tmp_path / "test" / n for n in FOLDERS["dsifn"])
    written = write_split(folders, 2, image_suffix=".jpg", mask_suffix=".tif")
    dataset = ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "test")
    assert dataset.layout.name == "dsifn"
    for i, (_, _, change) in enumerate(written.values()):
        np.testing.assert_array_equal(dataset[i]["mask"][0].numpy(), change)


def test_list_layout_keeps_list_order_and_only_listed_files(tmp_path):
    build_layout(tmp_path, "list", {"train": 3, "test": 2})
    (tmp_path / "list" / "train.txt").write_text("train_2.png\n\ntrain_0.png\n")
    dataset = ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "train")
    assert dataset.names == ["train_2", "train_0"]


def test_other_files_in_the_folders_are_ignored(tmp_path):
    build_layout(tmp_path, "levir", {"train": 2})
    (tmp_path / "train" / "A" / "notes.txt").write_text("x")
    (tmp_path / "train" / "label" / ".DS_Store").write_bytes(b"x")
    assert detect_layout(tmp_path).splits["train"].problems == ()


def test_pair_names_reports_missing_and_ambiguous_files():
    pairs, problems = pair_names(
        [
            ["1.png", "2.png", "3.png", "10.png"],
            ["1.png", "3.png", "10.png"],
            ["1.tif", "2.png", "3.png", "3.tif", "10.png"],
        ],
        ["A", "B", "label"],
    )
    assert pairs == [("1", ["1.png", "1.png", "1.tif"]), ("10", ["10.png", "10.png", "10.png"])]
    assert problems == ["2: no file in B", "3: ambiguous (3.png, 3.tif in label)"]


def test_pair_names_orders_numbers_naturally_and_follows_a_list():
    listing = [f"{i}.png" for i in (10, 2, 1)]
    pairs, _ = pair_names([listing] * 3, ["A", "B", "label"])
    assert [name for name, _ in pairs] == ["1", "2", "10"]
    pairs, problems = pair_names([listing] * 3, ["A", "B", "label"], ["10.png", "7.png"])
    assert [name for name, _ in pairs] == ["10"]
    assert problems == ["7: no file in A, B, label"]


def test_a_split_with_a_missing_partner_refuses_to_load(tmp_path):
    build_layout(tmp_path, "levir", {"train": 3})
    (tmp_path / "train" / "B" / "tile_1.png").unlink()
    found = detect_layout(tmp_path)
    assert "1 incomplete" in found.describe()
    with pytest.raises(
        DataError, match=r"1 incomplete pair\(s\) in split train .*tile_1: no file in B"
    ):
        ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "train")


def test_cdd_as_distributed_with_jpeg_images_and_masks(tmp_path):
    written = build_layout(
        tmp_path, "cdd-subset", {"train": 2, "test": 1}, image_suffix=".jpg", mask_suffix=".jpg"
    )
    dataset = ChangeDetectionDataset(DataConfig(root=str(tmp_path)), "train")
    assert dataset.layout.name == "cdd"
    for i, (t1, _, change) in enumerate(written["train"].values()):
        sample = dataset[i]
        np.testing.assert_array_equal(sample["mask"][0].numpy(), change)
        # Lossy images of noise: only the overall brightness survives exactly enough.
        assert abs(float(sample["image"][0].mean()) - float(t1.mean()) / 255.0) < 0.02
