"""The OSCD layout: detection, city splits, band files by name, 1/2 and 0/255 labels, crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsifn.cli.main import main
from dsifn.data import OSCD_BANDS, ChangeDetectionDataset, DataConfig, detect_layout
from dsifn.data.augment import augment_sample, sample_generator
from dsifn.data.dataset import load_pair, resolve_layout, settle_radiometry
from dsifn.data.layouts import pick_fraction
from dsifn.data.readers import decode_mask, read_mask
from dsifn.errors import ConfigError
from fixtures.datasets import OSCD_IMAGES, oscd_band_value, write_oscd, write_oscd_city

TRAIN = ["abudhabi", "beihai", "cupertino", "hongkong", "mumbai"]


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    return write_oscd(tmp_path_factory.mktemp("oscd"), official=True)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return write_oscd(tmp_path_factory.mktemp("cities"), official=False)


def test_the_official_distribution_is_found_with_its_city_lists(official):
    layout = detect_layout(official)
    assert layout.name == "oscd"
    assert list(layout.splits) == ["train", "val", "test"]
    train, val = layout.splits["train"], layout.splits["val"]
    assert sorted(s.name for s in train.samples + val.samples) == TRAIN
    assert len(val.samples) == 1 and val.carved
    assert [s.name for s in layout.splits["test"].samples] == ["brasilia", "chongqing"]
    sample = layout.splits["test"].samples[0]
    assert isinstance(sample.t1, tuple) and isinstance(sample.t2, tuple)
    assert [p.stem.rsplit("_", 1)[-1] for p in sample.t1] == list(OSCD_BANDS)
    assert sample.coding == "oscd" and sample.mask.name == "brasilia-cm.tif"
    assert "Test Labels" in str(sample.mask)
    assert "OSCD" in layout.describe()
    assert detect_layout(official / OSCD_IMAGES).name == "oscd"  # the images folder alone


def test_a_plain_folder_of_cities_is_all_train_with_either_label_file(plain):
    layout = detect_layout(plain, "oscd")
    assert list(layout.splits) == ["train", "val"]
    samples = layout.splits["train"].samples + layout.splits["val"].samples
    codings = {s.name: s.coding for s in samples}
    assert codings["abudhabi"] == "oscd" and codings["chongqing"] == "change>0"
    assert detect_layout(plain).name == "oscd"  # found by auto too


def test_val_cities_or_a_fraction_carve_the_val_split_deterministically(official):
    by_name = resolve_layout(DataConfig(root=str(official), val_cities=("beihai", "mumbai")))
    assert [s.name for s in by_name.splits["val"].samples] == ["beihai", "mumbai"]
    assert [s.name for s in by_name.splits["train"].samples] == [
        "abudhabi",
        "cupertino",
        "hongkong",
    ]
    config = DataConfig(root=str(official), val_fraction=0.4)
    first, again = resolve_layout(config), resolve_layout(config, resolve_layout(config))
    assert len(first.splits["val"].samples) == 2
    assert first.splits == again.splits
    assert pick_fraction(TRAIN, 0.4) == [s.name for s in first.splits["val"].samples]
    assert len(pick_fraction(["a", "b"], 0.9)) == 1  # never every city
    with pytest.raises(ConfigError, match="paris not among"):
        resolve_layout(DataConfig(root=str(official), val_cities=("paris",)))
    with pytest.raises(ConfigError, match="not both"):
        DataConfig(val_cities=("beihai",), val_fraction=0.2)
    assert DataConfig.from_dict(config.to_dict()) == config


def test_bands_by_name_pick_and_order_the_band_files_on_the_10m_grid(official):
    config = DataConfig(root=str(official), bands=("B04", "B03", "B02"), scale=10000)
    assert config.bands == ("B04", "B03", "B02")
    dataset = ChangeDetectionDataset(config, "test")
    assert dataset.bands == 3
    image = dataset[1]["image"]  # chongqing, 42 x 42
    assert image.shape == (2, 3, 42, 42)
    assert torch.allclose(image[0, :, 0, 0], torch.tensor([401.0, 301.0, 201.0]) / 10000)
    numbers = ChangeDetectionDataset(DataConfig(root=str(official), bands=(4, 3, 2)), "test")
    names = ChangeDetectionDataset(
        DataConfig(root=str(official), bands=("B04", "B03", "B02")), "test"
    )
    assert torch.equal(numbers[0]["image"], names[0]["image"])


def test_all_13_bands_by_default_resampled_from_20m_and_60m(official):
    dataset = ChangeDetectionDataset(DataConfig(root=str(official), scale=10000), "test")
    assert dataset.bands == 13
    image = dataset[0]["image"]  # brasilia, 48 x 54
    assert image.shape == (2, 13, 48, 54)
    expected = torch.tensor([oscd_band_value(b, 1) for b in OSCD_BANDS], dtype=torch.float32)
    # Constant bands stay constant through bilinear resampling: B01 (60 m) included.
    assert torch.allclose(image[0].mean(dim=(1, 2)), expected / 10000, atol=1e-6)
    assert torch.allclose(image[0, 0], image[0, 0, 0, 0].expand(48, 54))


def test_the_1_2_tif_and_the_0_255_png_decode_to_the_same_change(tmp_path):
    change, valid = decode_mask(np.array([[[0, 1, 2]]]), coding="oscd")
    assert change.tolist() == [[[0.0, 0.0, 1.0]]] and valid.tolist() == [[[False, True, True]]]
    truth = np.zeros((42, 48), dtype=bool)
    truth[5:15, 20:30] = True
    write_oscd_city(tmp_path, "tif", truth, coding="tif")
    write_oscd_city(tmp_path, "png", truth, coding="png")
    by_tif, ok_tif = read_mask(tmp_path / "tif/cm/tif-cm.tif", coding="oscd")
    by_png, ok_png = read_mask(tmp_path / "png/cm/cm.png")
    assert np.array_equal(by_tif[0] > 0, truth) and np.array_equal(by_png[0] > 0, truth)
    assert ok_tif.all() and ok_png.all()
    layout = detect_layout(tmp_path, "oscd")
    pairs = layout.splits["train"].samples + layout.splits["val"].samples
    config = settle_radiometry(DataConfig(root=str(tmp_path)), layout)
    for sample in pairs:
        _, mask, _, _ = load_pair(sample, config)
        assert np.array_equal(mask[0] > 0, truth)


def test_training_crops_come_from_labelled_pixels_and_read_only_their_window(tmp_path):
    truth = np.zeros((60, 60), dtype=bool)
    truth[40:50, 45:55] = True
    unlabelled = np.zeros((60, 60), dtype=bool)
    unlabelled[:, :42] = True  # labelled only in the right 18 columns
    for city in ("left", "right"):
        write_oscd_city(tmp_path, city, truth, coding="tif", unlabelled=unlabelled)
    config = DataConfig(root=str(tmp_path), bands=("B04",), crop_size=16, scale=10000)
    dataset = ChangeDetectionDataset(config, "train", train=True, seed=3)
    # A scene dataset: as many crops per epoch as its labelled area (60 x 18 px) holds; the
    # other city is the val split.
    assert len(dataset) == 5 and len(dataset.samples) == 1
    for epoch in range(4):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            item = dataset[i]
            assert item["image"].shape == (2, 1, 16, 16)
            assert item["valid"].any()  # drawn from the labelled columns
            # The change shows in T2's B04: mask and image moved together.
            bright = item["image"][1, 0] > 0.5
            assert torch.equal(bright & item["valid"][0], item["mask"][0].bool())
    # The windowed read gives what cropping the whole pair gives, draw for draw.
    generator = sample_generator(3, 3, 0)
    sample = dataset.samples[dataset.crops.draw(generator)]
    image, mask, valid, _ = (torch.from_numpy(a) for a in load_pair(sample, dataset.config))
    whole = augment_sample(image, mask, valid, config.augment, generator, 16, 0.5)
    windowed = dataset[0]
    for a, b in zip(whole, (windowed["image"], windowed["mask"], windowed["valid"]), strict=True):
        assert torch.equal(a, b)


def test_stats_prints_the_normalisation_of_bands_named(official, capsys):
    argv = ["stats", "--data", str(official), "--bands", "B04,B03,B02", "--scale", "10000"]
    assert main([*argv, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "OSCD" in out.splitlines()[0]
    rows = {
        line.split()[0]: line.split()[1:]
        for line in out.splitlines()
        if line[:4].strip().startswith("B")
    }
    assert list(rows) == ["B04", "B03", "B02"]
    assert float(rows["B03"][0]) == pytest.approx(0.03015, abs=1e-4)  # 301 and 302
    assert "model:\n  normalization:\n    mean: [" in out
