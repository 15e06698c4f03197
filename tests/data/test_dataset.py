from __future__ import annotations

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
