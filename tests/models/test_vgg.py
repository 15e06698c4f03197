"""ImageNet (torchvision-format) VGG16 weights: files, torch.hub cache, hashes, band adaptation.

Every weight file here is generated: random tensors under torchvision's ``vgg16`` key names
and shapes. Nothing touches the network.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error

import pytest
import torch
import torch.nn.functional as F

import dsifn.models.vgg as vgg
from dsifn.errors import WeightsError
from dsifn.models.dsifn import DSIFN
from dsifn.models.vgg import (
    VGG16_IMAGENET1K_V1,
    WeightsRecord,
    adapt_first_conv,
    fetch_weights,
    load_vgg16_state_dict,
)
from dsifn.normalization import IMAGENET_RGB

# torchvision vgg16: conv index in `features` -> (out, in) channels; classifier Linear layers.
CONVS = {
    0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256),
    14: (256, 256), 17: (512, 256), 19: (512, 512), 21: (512, 512), 24: (512, 512),
    26: (512, 512), 28: (512, 512),
}  # fmt: skip
CLASSIFIER = {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)}


def torchvision_vgg16_state_dict(seed=0):
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for i, (out, inp) in CONVS.items():
        state[f"features.{i}.weight"] = torch.randn(out, inp, 3, 3, generator=gen) * 0.05
        state[f"features.{i}.bias"] = torch.randn(out, generator=gen) * 0.1
    for i, (out, inp) in CLASSIFIER.items():
        # Right shapes, one stored value each (stride-0 views): the file stays ~60 MB, not 550.
        state[f"classifier.{i}.weight"] = torch.full((1,), 0.01).expand(out, inp)
        state[f"classifier.{i}.bias"] = torch.zeros(1).expand(out)
    return state


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    state = torchvision_vgg16_state_dict()
    path = tmp_path_factory.mktemp("weights") / "vgg16-generated.pth"
    torch.save(state, path)
    return path, state


@pytest.fixture
def hub_dir(tmp_path):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    torch.hub.set_dir(old)


@pytest.fixture
def no_download(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("download attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fail)


def record_for(path, name="generated"):
    return WeightsRecord(
        name=name,
        url="https://example.invalid/vgg16-generated.pth",
        filename="vgg16-generated.pth",
        sha256_prefix=sha256(path)[:8],
        normalization=IMAGENET_RGB,
    )


def assert_encoder_holds(encoder, state, first_weight=None):
    for i in CONVS:
        expected = state[f"features.{i}.weight"] if i or first_weight is None else first_weight
        assert torch.equal(encoder.features[i].weight, expected), i
        assert torch.equal(encoder.features[i].bias, state[f"features.{i}.bias"]), i


def test_file_path_loads_into_shared_encoder(vgg_file):
    path, state = vgg_file
    model = DSIFN(encoder_weights=str(path))
    assert model.config.encoder_weights == str(path)
    assert_encoder_holds(model.encoder, state)


def test_file_path_loads_into_both_separate_encoders(vgg_file):
    path, state = vgg_file
    model = DSIFN(encoder_weights=str(path), shared_encoder=False)
    assert model.encoder_t2 is not None
    assert_encoder_holds(model.encoder, state)
    assert_encoder_holds(model.encoder_t2, state)
    # Two encoders, not one encoder under two names.
    assert model.encoder.features[0].weight is not model.encoder_t2.features[0].weight


def test_cached_file_is_found_and_loaded(vgg_file, hub_dir, no_download):
    path, state = vgg_file
    hub_dir.mkdir(parents=True)
    shutil.copy(path, hub_dir / "vgg16-generated.pth")
    record = record_for(path)
    assert fetch_weights(record) == hub_dir / "vgg16-generated.pth"
    loaded = load_vgg16_state_dict(record)
    assert loaded.keys() == state.keys()
    assert torch.equal(loaded["features.28.weight"], state["features.28.weight"])


def test_corrupted_cached_file_fails_hash_check(vgg_file, hub_dir, no_download):
    path, _ = vgg_file
    hub_dir.mkdir(parents=True)
    cached = hub_dir / "vgg16-generated.pth"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"SHA-256.*corrupted"):
        fetch_weights(record_for(path))


def test_offline_without_cache_names_file_and_folder(vgg_file, hub_dir, monkeypatch):
    path, _ = vgg_file

    def offline(url, dst, *args, **kwargs):
        with open(dst, "wb") as f:  # a half-written download, to be cleaned up
            f.write(b"partial")
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError) as info:
        fetch_weights(record_for(path))
    message = str(info.value)
    assert "vgg16-generated.pth" in message and str(hub_dir) in message
    assert "https://example.invalid/vgg16-generated.pth" in message
    assert list(hub_dir.iterdir()) == []  # no partial file left behind
    with pytest.raises(WeightsError, match=r"vgg16-397923af\.pth"):
        DSIFN(encoder_weights="imagenet")


def test_imagenet_routes_to_torchvision_record(vgg_file, hub_dir, monkeypatch):
    path, state = vgg_file
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        shutil.copy(path, dst)  # stands in for the real file (hash checked by torch.hub)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = DSIFN(encoder_weights="imagenet")
    assert calls == [(VGG16_IMAGENET1K_V1.url, VGG16_IMAGENET1K_V1.sha256_prefix)]
    assert VGG16_IMAGENET1K_V1.url.endswith("vgg16-397923af.pth")
    assert (hub_dir / "vgg16-397923af.pth").is_file()
    assert_encoder_holds(model.encoder, state)
    assert model.config.input_normalization == IMAGENET_RGB
    # Now cached: the cached file's hash is checked, and this generated one is not the real one.
    with pytest.raises(WeightsError, match="397923af"):
        DSIFN(encoder_weights="imagenet")
    assert len(calls) == 1


def test_download_hash_mismatch_is_weights_error(vgg_file, hub_dir, monkeypatch):
    path, _ = vgg_file

    def bad_hash(url, dst, *args, **kwargs):
        shutil.copy(path, dst)
        raise RuntimeError('invalid hash value (expected "397923af", got "0123abcd")')

    monkeypatch.setattr(torch.hub, "download_url_to_file", bad_hash)
    with pytest.raises(WeightsError, match="hash check"):
        fetch_weights(record_for(path))
    assert list(hub_dir.iterdir()) == []


def test_first_conv_rule_for_one_band():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(8, 3, 3, 3, generator=gen)
    one = adapt_first_conv(w, 1)
    assert one.shape == (8, 1, 3, 3)
    torch.testing.assert_close(one[:, 0], w[:, 0] + w[:, 1] + w[:, 2])
    # A grey image gives the response of the RGB image made by repeating it.
    grey = torch.rand(1, 1, 10, 10, generator=gen)
    torch.testing.assert_close(
        F.conv2d(grey, one, padding=1), F.conv2d(grey.expand(1, 3, 10, 10), w, padding=1)
    )


def test_first_conv_rule_for_more_bands():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(8, 3, 3, 3, generator=gen)
    four = adapt_first_conv(w, 4)
    # Bands repeat R, G, B, R, ... scaled by 3/4.
    for c, src in enumerate((0, 1, 2, 0)):
        torch.testing.assert_close(four[:, c], w[:, src] * 0.75)
    # With 6 bands each RGB filter appears twice at half weight: an image whose six bands are
    # its RGB bands twice gives exactly the RGB response.
    six = adapt_first_conv(w, 6)
    rgb = torch.rand(1, 3, 10, 10, generator=gen)
    torch.testing.assert_close(
        F.conv2d(rgb.repeat(1, 2, 1, 1), six, padding=1), F.conv2d(rgb, w, padding=1)
    )
    assert adapt_first_conv(w, 3) is w


@pytest.mark.parametrize("bands", [1, 4])
def test_model_adapts_first_conv(vgg_file, bands):
    path, state = vgg_file
    model = DSIFN(in_channels=bands, encoder_weights=str(path))
    w = state["features.0.weight"]
    expected = w.sum(dim=1, keepdim=True) if bands == 1 else w[:, [0, 1, 2, 0]] * (3 / bands)
    assert_encoder_holds(model.encoder, state, first_weight=expected)
    assert model.config.input_normalization.bands == bands


def test_bad_files_are_weights_errors(tmp_path, vgg_file):
    with pytest.raises(WeightsError, match="does not exist"):
        DSIFN(encoder_weights=str(tmp_path / "absent.pth"))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot read") as info:
        load_vgg16_state_dict(garbage)
    assert "not a file written by torch.save" in str(info.value)
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    with pytest.raises(WeightsError, match="is a folder, not a file"):
        DSIFN(encoder_weights=str(tmp_path))
    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], a_list)
    with pytest.raises(WeightsError, match="state dict"):
        load_vgg16_state_dict(a_list)
    _, state = vgg_file
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if k != "features.14.weight"}, partial)
    with pytest.raises(WeightsError, match=r"features\.14\.weight"):
        DSIFN(encoder_weights=str(partial))


def test_weights_record_is_module_data():
    assert vgg.VGG16_IMAGENET1K_V1.filename == "vgg16-397923af.pth"
    assert VGG16_IMAGENET1K_V1.normalization == IMAGENET_RGB
