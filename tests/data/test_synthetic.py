"""The synthetic bi-temporal dataset: seeded, labels matching the drawn objects, nuisance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dsifn.data import ChangeDetectionDataset, DataConfig, detect_layout
from dsifn.data.synthetic import MARKER, SyntheticConfig, generate_pair, write_synthetic_dataset
from dsifn.errors import ConfigError, OutputExistsError

SMALL = SyntheticConfig(size=48, train=3, val=2, test=2)


def test_same_seed_same_pair_other_seed_other_pair():
    a, b = generate_pair(SMALL, (1, 0, 5)), generate_pair(SMALL, (1, 0, 5))
    assert np.array_equal(a.t1, b.t1) and np.array_equal(a.t2, b.t2)
    assert np.array_equal(a.label, b.label) and a.objects == b.objects
    c = generate_pair(SMALL, (2, 0, 5))
    assert not np.array_equal(a.t1, c.t1)


def test_written_dataset_is_byte_identical_for_a_seed(tmp_path):
    first = write_synthetic_dataset(tmp_path / "a", SMALL, seed=3, progress=False)
    second = write_synthetic_dataset(tmp_path / "b", SMALL, seed=3, progress=False)
    other = write_synthetic_dataset(tmp_path / "c", SMALL, seed=4, progress=False)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert len(files) == 3 * (3 + 2 + 2)
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    assert any((first / f).read_bytes() != (other / f).read_bytes() for f in files)
    info = json.loads((first / MARKER).read_text())
    assert info["seed"] == 3 and SyntheticConfig.from_dict(info["config"]) == SMALL


def _box_pixels(label, box):
    top, left, bottom, right = box
    return label[top:bottom, left:right]


@pytest.mark.parametrize("index", range(12))
def test_labels_match_the_drawn_objects(index):
    config = SyntheticConfig(size=64, change_probability=0.5, roads=(1, 2))
    pair = generate_pair(config, (0, 0, index))
    label = pair.label.astype(bool)
    # Paint what covers each pixel at each date from the returned object list: a pixel is
    # change when that differs (a road crossing a road is road at both dates).
    cover = [np.zeros(label.shape, int), np.zeros(label.shape, int)]
    for k, obj in enumerate(pair.objects):
        top, left, bottom, right = obj.box
        for date, present in enumerate((obj.in_t1, obj.in_t2)):
            if present:
                cover[date][top:bottom, left:right] = 1 if obj.kind == "road" else 2 + k
        if obj.kind == "building" and (bottom - top) * (right - left) > 0:
            # Buildings never overlap anything: a changed one is all change, a kept one none.
            assert _box_pixels(label, obj.box).all() == obj.changed
            assert _box_pixels(label, obj.box).any() == obj.changed
    np.testing.assert_array_equal(label, cover[0] != cover[1])


def test_some_pairs_have_change_and_some_objects_are_static():
    pairs = [generate_pair(SMALL, (0, 0, i)) for i in range(10)]
    objects = [o for p in pairs for o in p.objects]
    assert any(o.changed for o in objects) and any(not o.changed for o in objects)
    assert any(o.kind == "road" for o in objects)
    assert {o.in_t2 for o in objects if o.changed} == {True, False}  # appear and vanish
    assert any(p.label.any() for p in pairs)


def test_nuisance_is_present_outside_the_change():
    config = SyntheticConfig(size=64, change_probability=0.0)  # no labelled change at all
    diffs, shifts, gains = [], [], []
    for i in range(8):
        pair = generate_pair(config, (0, 0, i))
        assert not pair.label.any()
        diffs.append(np.abs(pair.t2.astype(int) - pair.t1.astype(int)).mean())
        shifts.append(pair.shift)
        gains.append(pair.gain)
    assert min(diffs) > 3  # illumination, season, noise and misregistration change pixels
    assert any(s != (0, 0) for s in shifts) and max(max(map(abs, s)) for s in shifts) <= 2
    assert max(gains) - min(gains) > 0.05
    quiet = SyntheticConfig(
        size=64, change_probability=0.0, illumination=0.0, season=0.0, shift=0, noise=0.0
    )
    pair = generate_pair(quiet, (0, 0, 0))
    # With every nuisance off the dates are identical up to the brightness offset.
    assert np.abs(pair.t2.astype(int) - pair.t1.astype(int)).max() <= 8


def test_season_shifts_vegetation_colour():
    on = SyntheticConfig(size=64, change_probability=0.0, illumination=0.0, shift=0, noise=0.0)
    pair = generate_pair(on, (0, 0, 1))
    # Green minus red falls from T1 to T2: vegetation turns yellow-brown.
    greenness = [
        float((img[..., 1].astype(int) - img[..., 0].astype(int)).mean())
        for img in (pair.t1, pair.t2)
    ]
    assert greenness[1] < greenness[0] - 5


def test_the_normal_reader_reads_it(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", SMALL, seed=0, progress=False)
    assert detect_layout(root).name == "levir"
    dataset = ChangeDetectionDataset(DataConfig(root=str(root)), "test")
    sample = dataset[1]
    assert sample["image"].shape == (2, 3, 48, 48)
    pair = generate_pair(SMALL, (0, 2, 1))  # split index 2 = test
    np.testing.assert_array_equal(sample["mask"][0].numpy(), pair.label)
    np.testing.assert_allclose(
        sample["image"][1].permute(1, 2, 0).numpy() * 255, pair.t2, atol=1e-3
    )


def test_overwrite_rules(tmp_path):
    root = write_synthetic_dataset(tmp_path / "syn", SMALL, progress=False)
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        write_synthetic_dataset(root, SMALL, progress=False)
    write_synthetic_dataset(root, SMALL, seed=1, overwrite=True, progress=False)
    assert json.loads((root / MARKER).read_text())["seed"] == 1
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not a synthetic dataset"):
        write_synthetic_dataset(precious, SMALL, overwrite=True, progress=False)
    assert (precious / "thesis.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious", "syn"]  # no temp folders


def test_bad_config_values():
    with pytest.raises(ConfigError, match="at least 16"):
        SyntheticConfig(size=8)
    with pytest.raises(ConfigError, match="shift"):
        SyntheticConfig(size=32, shift=8)
    with pytest.raises(ConfigError, match="change_probability"):
        SyntheticConfig(change_probability=1.5)


def test_an_interrupted_write_keeps_the_old_dataset_whole(tmp_path, monkeypatch):
    import hashlib

    import dsifn.data.synthetic as synthetic

    config = SyntheticConfig(train=2, val=1, test=1, size=32)
    root = write_synthetic_dataset(tmp_path / "data", config, seed=1, progress=False)

    def digest() -> dict[str, str]:
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    before = digest()
    calls = []
    real = synthetic._write_pair

    def crash_at_the_third(*args):
        calls.append(args)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(*args)

    monkeypatch.setattr(synthetic, "_write_pair", crash_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic_dataset(root, config, seed=2, overwrite=True, progress=False)
    assert digest() == before  # the old dataset, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no private folder left
    calls.clear()
    with pytest.raises(KeyboardInterrupt):  # into a folder that does not exist yet
        write_synthetic_dataset(tmp_path / "new" / "data", config, seed=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # nor a folder made for it
