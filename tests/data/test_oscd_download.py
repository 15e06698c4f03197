"""OSCD as a user has it: the download's three folders, imgs_*_rect, dates on two grids."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsifn.data import ChangeDetectionDataset, DataConfig, detect_layout
from dsifn.data.dataset import read_dates, resolve_layout, settle_radiometry
from dsifn.errors import DataError
from dsifn.evaluation.scoring import evaluate
from dsifn.testing import StandInRunner
from fixtures.datasets import (
    OSCD_IMAGES,
    OSCD_LABELS,
    OSCD_RECT_MARK,
    oscd_band_value,
    write_oscd,
    write_oscd_city,
)

FOLDERS = [OSCD_IMAGES, OSCD_LABELS.format("Train"), OSCD_LABELS.format("Test")]


@pytest.fixture(scope="module")
def download(tmp_path_factory):
    return write_oscd(tmp_path_factory.mktemp("oscd"), official=True, rect=True)


@pytest.mark.parametrize("folder", ["", *FOLDERS])
def test_the_parent_and_any_of_its_three_folders_find_images_and_labels(download, folder):
    layout = detect_layout(download / folder)
    assert layout.name == "oscd"
    assert {k: len(v.samples) for k, v in layout.splits.items()} == {
        "train": 4,
        "val": 1,
        "test": 2,
    }
    assert all(not files.problems for files in layout.splits.values())
    assert "imgs_1_rect/imgs_2_rect/cm" in layout.describe()
    test = layout.splits["test"].samples[0]
    assert "Test Labels" in str(test.mask) and test.align


def test_rect_images_are_read_by_default_and_the_raw_band_files_on_request(download):
    values = {}
    for rect in (True, False):
        config = DataConfig(root=str(download), bands=("B04",), oscd_rect=rect)
        layout = resolve_layout(config)
        config = settle_radiometry(config, layout)
        pair = read_dates(layout.splits["test"].samples[0], config)
        values[rect] = pair.values[0, 0, 0, 0]
    # OSCD's digital numbers read as reflectance (DN / 10000): the layout knows them.
    assert values[True] == pytest.approx((oscd_band_value("B04", 1) + OSCD_RECT_MARK) / 1e4)
    assert values[False] == pytest.approx(oscd_band_value("B04", 1) / 1e4)
    raw = detect_layout(download, oscd_rect=False)
    assert "imgs_1/imgs_2/cm" in raw.describe()


def _shifted_city(root, **t2):
    truth = np.zeros((48, 60), dtype=bool)
    truth[12:30, 18:42] = True
    write_oscd_city(root, "hongkong", truth, **t2)
    return truth


def test_a_second_date_on_another_grid_is_resampled_onto_the_first_said_once(tmp_path, capsys):
    truth = _shifted_city(tmp_path, t2_extra=2)
    config = DataConfig(root=str(tmp_path), bands=("B04", "B03"))
    dataset = ChangeDetectionDataset(config, "train")
    item = dataset[0]
    assert item["image"].shape == (2, 2, 48, 60)  # T1's grid, the change map's
    assert item["valid"].all()
    dataset[0]
    err = capsys.readouterr().err
    assert err.count("hongkong: T2 (62x50 px") == 1 and "onto T1's grid (60x48 px" in err
    bright = item["image"][1, 0] > 0.45  # T2's B04: 0.9 in the change, 0.04 outside
    # Bilinear resampling blurs the edges by a pixel; the inside is the change map's.
    assert (bright.numpy() == truth)[2:-2, 2:-2].mean() > 0.95
    # Scoring the city through the one scoring core works on T1's grid.
    runner = StandInRunner(bands=2, kind="band")
    runner.contract = runner.contract.replace(radiometry="reflectance", threshold=0.45)
    result = evaluate(runner, dataset, threshold=0.45, progress=False)
    assert result.scores["f1"] > 0.9


def test_dates_that_do_not_overlap_are_refused_in_one_line(tmp_path):
    _shifted_city(tmp_path, t2_extra=2, t2_origin=(12.4, 41.9))  # T2 over Rome, T1 Paris
    dataset = ChangeDetectionDataset(DataConfig(root=str(tmp_path), bands=("B04",)), "train")
    with pytest.raises(DataError, match=r"^hongkong: T2 \(bounds .*\) does not overlap T1"):
        dataset[0]


def test_an_epoch_of_a_scene_dataset_draws_crops_in_proportion_to_valid_area(tmp_path):
    for name, side in (("small", 36), ("large", 72), ("other", 36)):
        write_oscd_city(tmp_path, name, np.zeros((side, side), bool))
    config = DataConfig(root=str(tmp_path), bands=("B04",), crop_size=12, val_cities=["other"])
    # The default: as many crops as the train split's valid area holds ((36² + 72²) / 12²).
    train = ChangeDetectionDataset(config, "train", train=True)
    assert len(train) == 45 and train.names == ["large", "small"]
    asked = ChangeDetectionDataset(
        DataConfig.from_dict({**config.to_dict(), "samples_per_epoch": 400}), "train", train=True
    )
    assert len(asked) == 400
    drawn = [asked.crops.draw(_generator(asked, i)) for i in range(400)]
    assert 0.12 < drawn.count(1) / 400 < 0.28  # "small" holds a fifth of the area
    assert asked[5]["image"].shape == (2, 1, 12, 12)


def _generator(dataset, index):
    from dsifn.data.augment import sample_generator

    return sample_generator(dataset.seed, dataset.epoch, index)


def test_samples_per_epoch_needs_crops_and_tile_datasets_keep_one_crop_per_image(tmp_path):
    from dsifn.errors import ConfigError
    from fixtures.datasets import write_levir

    with pytest.raises(ConfigError, match="samples_per_epoch draws crops"):
        DataConfig(samples_per_epoch=10)
    levir = write_levir(tmp_path, counts=(3, 1, 1))
    train = ChangeDetectionDataset(DataConfig(root=str(levir), crop_size=16), "train", train=True)
    assert len(train) == 3 and train.crops is None
    many = DataConfig(root=str(levir), crop_size=16, samples_per_epoch=7)
    assert len(ChangeDetectionDataset(many, "train", train=True)) == 7
    assert len(ChangeDetectionDataset(many, "val")) == 1  # evaluation: whole images
    assert torch.is_tensor(ChangeDetectionDataset(many, "train", train=True)[6]["image"])


def test_a_named_layout_that_does_not_fit_says_which_the_folder_holds(download):
    with pytest.raises(DataError, match=r"it holds the OSCD layout: `data.layout=auto`$"):
        detect_layout(download, "levir")


@pytest.mark.slow
def test_evaluate_reads_the_images_the_checkpoint_trained_on(download, tmp_path):
    from dsifn import DSIFN, save_checkpoint
    from dsifn.contract import CONTRACT_KEY, InputContract
    from dsifn.evaluation.workflow import evaluate_checkpoint

    model = DSIFN(encoder_weights=None)
    contract = InputContract.of(model).replace(
        bands=("B04", "B03", "B02"), radiometry="reflectance"
    )
    first_pixel = {}
    for rect, offset in ((True, None), (False, None), (False, -100)):
        path = tmp_path / f"rect_{rect}.pt"
        meta = {CONTRACT_KEY: contract.to_dict(), "training": {"data": {"oscd_rect": rect}}}
        save_checkpoint(path, model, meta=meta, overwrite=True)
        seen = []
        evaluate_checkpoint(
            path,
            download,
            split="test",
            device="cpu",
            precision="fp32",
            progress=False,
            offset=offset,
            on_prediction=lambda p, seen=seen: seen.append(p.image[0, 0, 0, 0].item()),
        )
        first_pixel[rect, offset] = seen[0]
    # brasilia's T1 B04, as reflectance: the rectified copy when trained on it, else the raw.
    raw = oscd_band_value("B04", 1)
    assert first_pixel[True, None] == pytest.approx((raw + OSCD_RECT_MARK) / 1e4)
    assert first_pixel[False, None] == pytest.approx(raw / 1e4)
    assert first_pixel[False, -100] == pytest.approx((raw - 100) / 1e4)  # evaluate --offset


def test_stats_reads_oscd_as_reflectance_and_says_so(download, capsys):
    from dsifn.cli.main import main

    means = {}
    for extra in ([], ["--scale", "10000"]):
        argv = ["stats", "--data", str(download), "--bands", "B4,B3,B2", "--no-progress"]
        assert main([*argv, *extra]) == 0
        lines = capsys.readouterr().out.splitlines()
        means[bool(extra)] = [float(line.split()[1]) for line in lines[3:6]]
        said = "values as reflectance" if not extra else "values scaled to [0, 1]"
        assert said in lines[1]
    # DN / 10000 and reflectance agree where no value reaches 10000 (no clipping).
    np.testing.assert_allclose(means[True], means[False], atol=1e-6)
