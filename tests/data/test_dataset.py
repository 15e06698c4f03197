from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dsifn.data import AugmentConfig, ChangeDetectionDataset, DataConfig
from fixtures.datasets import build_layout

AUGMENT = AugmentConfig(scale=(0.8, 1.25), brightness=0.2, contrast=0.2, hue=0.05, noise=0.02)


@pytest.fixture(scope="module")
def levir(tmp_path_factory):
    root = tmp_path_factory.mktemp("levir")
    build_layout(root, "levir", {"train": 4, "val": 2})
    return root


def config(root, **options):
    return DataConfig(root=str(root), crop_size=24, augment=AUGMENT, **options)


def same(a, b):
    return (
        all(torch.equal(a[k], b[k]) for k in ("image", "mask", "valid")) and a["name"] == b["name"]
    )


def test_same_seed_epoch_index_gives_the_same_sample(levir):
    first = ChangeDetectionDataset(config(levir), "train", train=True, seed=5)
    second = ChangeDetectionDataset(config(levir), "train", train=True, seed=5)
    first.set_epoch(3)
    second.set_epoch(3)
    for i in range(len(first)):
        assert same(first[i], second[i])
    assert same(first[1], first[1])


def test_another_epoch_or_seed_gives_another_sample(levir):
    dataset = ChangeDetectionDataset(config(levir), "train", train=True, seed=5)
    epoch0 = dataset[0]
    dataset.set_epoch(1)
    assert dataset.epoch == 1
    assert not torch.equal(dataset[0]["image"], epoch0["image"])
    other_seed = ChangeDetectionDataset(config(levir), "train", train=True, seed=6)
    assert not torch.equal(other_seed[0]["image"], epoch0["image"])
    dataset.set_epoch(0)
    assert same(dataset[0], epoch0)  # a resumed run replays the epoch


def test_training_samples_are_cropped_and_evaluation_samples_are_whole(levir):
    train = ChangeDetectionDataset(config(levir), "train", train=True)
    sample = train[0]
    assert sample["image"].shape == (2, 3, 24, 24)
    assert sample["mask"].shape == sample["valid"].shape == (1, 24, 24)
    assert sample["image"].dtype == torch.float32 and sample["valid"].dtype == torch.bool
    assert 0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1
    evaluation = ChangeDetectionDataset(config(levir), "val")
    assert evaluation[0]["image"].shape == (2, 3, 32, 32)
    plain = ChangeDetectionDataset(DataConfig(root=str(levir)), "val")
    assert same(evaluation[0], plain[0])  # no augmentation, no crop


def _collect(loader):
    return [(batch["name"], batch["image"], batch["mask"]) for batch in loader]


def test_loader_workers_do_not_change_the_samples(levir):
    dataset = ChangeDetectionDataset(config(levir), "train", train=True, seed=2)
    dataset.set_epoch(4)
    alone = _collect(DataLoader(dataset, batch_size=2))
    workers = _collect(DataLoader(dataset, batch_size=2, num_workers=2))
    assert len(alone) == len(workers) == 2
    for (names_a, image_a, mask_a), (names_b, image_b, mask_b) in zip(alone, workers, strict=True):
        assert names_a == names_b
        assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)


def test_set_epoch_reaches_persistent_workers(levir):
    dataset = ChangeDetectionDataset(config(levir), "train", train=True, seed=2)
    loader = DataLoader(dataset, batch_size=4, num_workers=1, persistent_workers=True)
    by_epoch = {}
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        by_epoch[epoch] = _collect(loader)[0][1]
    assert not torch.equal(by_epoch[0], by_epoch[1])
    reference = ChangeDetectionDataset(config(levir), "train", train=True, seed=2)
    reference.set_epoch(1)
    assert torch.equal(by_epoch[1][0], reference[0]["image"])


def test_index_out_of_range(levir):
    dataset = ChangeDetectionDataset(DataConfig(root=str(levir)), "val")
    with pytest.raises(IndexError):
        dataset[2]
    assert dataset[-1]["name"] == dataset.names[-1]


def test_a_pairs_stretch_is_sampled_once_and_scales_crops_as_the_whole_pair(levir, monkeypatch):
    import dsifn.data.dataset as dataset
    import dsifn.io.pairs as pairs

    sampled, opened = [], []
    sample_pair, open_pair = pairs.stretch_sample, dataset.open_pair

    def counted_sample(*dates):
        sampled.append(dates)
        return sample_pair(*dates)

    def counted_open(*args, **kwargs):
        opened.append(args)
        return open_pair(*args, **kwargs)

    monkeypatch.setattr(pairs, "stretch_sample", counted_sample)
    monkeypatch.setattr(dataset, "open_pair", counted_open)
    stretched = DataConfig(root=str(levir), crop_size=24, stretch=(2, 98))
    train = ChangeDetectionDataset(stretched, "train", train=True)
    crops = [train[i] for _ in range(2) for i in range(len(train))]
    assert all(0 <= float(c["image"].min()) <= float(c["image"].max()) <= 1 for c in crops)
    assert len(sampled) == len(train.samples)  # once per pair, not once per read
    assert len(opened) == len(crops)  # one open per read: no pair opened to learn its stretch
    for index, sample in enumerate(train.samples):
        whole = dataset.read_dates(sample, train.config)  # the pair's stretch resolved afresh
        crop = train._dates(index, sample, (3, 5, 16, 16))  # through the dataset's cache
        assert np.array_equal(crop.values, whole.values[..., 3:19, 5:21])


def test_pairs_are_read_with_the_radiometry_decided_for_the_dataset(levir):
    from dsifn.data.dataset import read_dates, resolve_layout, settle_radiometry
    from dsifn.errors import ConfigError

    undecided = DataConfig(root=str(levir))
    layout = resolve_layout(undecided)
    sample = layout.splits["train"].samples[0]
    with pytest.raises(ConfigError, match="decided per dataset"):
        read_dates(sample, undecided)
    decided = settle_radiometry(undecided, layout)
    assert decided.radiometry == "dn"  # PNGs state nothing
    assert read_dates(sample, decided).values.shape == (2, 3, 32, 32)
