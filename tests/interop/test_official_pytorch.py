"""Loading the authors' PyTorch DSIFN state dicts (the reference layout: fixtures.official)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dsifn.errors import WeightsError
from dsifn.interop.official_pytorch import (
    load_official_pytorch,
    official_to_dsifn,
    read_official_state_dict,
)
from dsifn.models.dsifn import DSIFN
from fixtures.official import Official, VGGBase, randomise


@pytest.fixture(scope="module")
def shared_official():
    torch.manual_seed(0)
    base = VGGBase()
    return randomise(Official(base, base))


@pytest.fixture(scope="module")
def separate_official():
    torch.manual_seed(1)
    return randomise(Official(VGGBase(), VGGBase()))


def check_same_outputs(official, ours, size=(32, 48)):
    gen = torch.Generator().manual_seed(3)
    t1 = torch.randn(1, 3, *size, generator=gen)
    t2 = torch.randn(1, 3, *size, generator=gen)
    with torch.no_grad():
        theirs = official(t1, t2)
        mine = ours(t1, t2)
    assert len(mine) == len(theirs) == 5
    for k, (a, b) in enumerate(zip(mine, theirs, strict=True)):
        assert a.shape == b.shape, k
        torch.testing.assert_close(torch.sigmoid(a), b, rtol=0, atol=1e-5)
    # The check is not trivial: the maps are neither saturated nor constant, and swapping the
    # dates (a plausible mapping mistake) moves them far beyond the tolerance.
    assert 1e-3 < theirs[0].std() and 0.05 < theirs[0].mean() < 0.95
    with torch.no_grad():
        swapped = torch.sigmoid(ours(t2, t1).stride1)
    assert (swapped - theirs[0]).abs().max() > 1e-3


def test_shared_trunk_file_gives_same_outputs(shared_official, tmp_path):
    path = tmp_path / "official.pth"
    torch.save(shared_official.state_dict(), path)
    model = load_official_pytorch(path)
    assert isinstance(model, DSIFN) and not model.training
    assert model.config.shared_encoder and model.encoder_t2 is None
    assert model.config.variant == "pytorch" and not model.config.stage1_channel_attention
    assert "official.pth" in model.checkpoint_meta["source"]
    check_same_outputs(shared_official, model)


def test_separate_trunks_give_same_outputs(separate_official):
    model = load_official_pytorch(separate_official.state_dict())
    assert not model.config.shared_encoder and model.encoder_t2 is not None
    check_same_outputs(separate_official, model)


def test_mapping_covers_each_of_our_keys_once(separate_official):
    theirs = separate_official.state_dict()
    state, options = official_to_dsifn(theirs)
    assert options == {
        "in_channels": 3,
        "shared_encoder": False,
        "variant": "pytorch",
        "stage1_channel_attention": False,
    }
    with torch.device("meta"):  # names and shapes only
        ours = DSIFN(**options).state_dict()
    assert set(state) == set(ours)
    # Every one of their tensors lands exactly once, except the never-used ones.
    unused = [k for k in theirs if k.split(".")[0] in ("ca1", "bn_ca1", "bn_ca2")]
    assert len(unused) == 2 + 5 + 5  # ca1.fc1/fc2 and two BatchNorms' 5 entries
    assert len(state) == len(theirs) - len(unused)
    used = {id(v) for v in state.values()}
    assert len(used) == len(state)
    assert used == {id(v) for k, v in theirs.items() if k not in unused}
    for k, v in state.items():
        assert v.shape == ours[k].shape, k
    # Spot checks of the naming.
    assert state["heads.0.weight"] is theirs["o1_conv3.weight"]
    assert state["heads.4.bias"] is theirs["o5_conv4.bias"]
    assert state["stages.1.up.weight"] is theirs["trans_conv1.weight"]
    assert state["stages.4.blocks.2.1.weight"] is theirs["o5_conv3.1.weight"]
    assert state["encoder_t2.features.28.bias"] is theirs["t2_base.features.28.bias"]


def test_shared_trunk_keys_map_once(shared_official):
    theirs = shared_official.state_dict()
    assert any(k.startswith("t2_base.") for k in theirs)
    state, options = official_to_dsifn(theirs)
    assert options["shared_encoder"] is True
    assert not any(k.startswith("encoder_t2.") for k in state)
    with torch.device("meta"):
        assert set(state) == set(DSIFN().state_dict())


def test_wrapped_and_prefixed_state_dicts(shared_official, tmp_path):
    theirs = shared_official.state_dict()
    plain, _ = official_to_dsifn(theirs)
    prefixed = {f"module.{k}": v for k, v in theirs.items()}
    for variant in (prefixed, {"state_dict": prefixed}, {"model": theirs, "epoch": 3}):
        state, options = official_to_dsifn(variant)
        assert state.keys() == plain.keys() and options["shared_encoder"]
    path = tmp_path / "dp.pth"
    torch.save({"state_dict": prefixed, "epoch": 10}, path)
    assert read_official_state_dict(path).keys() == theirs.keys()
    loaded = load_official_pytorch(path).state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in plain.items())


def test_other_band_counts_are_detected():
    base = VGGBase(in_channels=4)
    official = Official(base, base)
    state, options = official_to_dsifn(official.state_dict())
    assert options["in_channels"] == 4
    assert state["encoder.features.0.weight"].shape == (64, 4, 3, 3)


def test_torchvision_vgg16_state_dict_is_refused(tmp_path):
    vgg = VGGBase().state_dict()  # torchvision's features.N.* names
    vgg.update(
        {"classifier.6.weight": torch.zeros(1000, 4096), "classifier.6.bias": torch.zeros(1000)}
    )
    path = tmp_path / "vgg16.pth"
    torch.save(vgg, path)
    with pytest.raises(WeightsError, match="t1_base"):
        load_official_pytorch(path)


def test_missing_unknown_and_misshaped_keys(separate_official):
    theirs = dict(separate_official.state_dict())
    missing = {k: v for k, v in theirs.items() if not k.startswith("o3_conv2.")}
    with pytest.raises(WeightsError, match="o3_conv2"):
        official_to_dsifn(missing)
    unknown = {**theirs, "o6_conv1.0.weight": torch.zeros(1)}
    with pytest.raises(WeightsError, match="o6_conv1"):
        official_to_dsifn(unknown)
    misshaped = {**theirs, "o2_conv4.weight": torch.zeros(1, 128, 1, 1)}
    with pytest.raises(WeightsError, match=r"o2_conv4.weight.*\(1, 256, 1, 1\)"):
        official_to_dsifn(misshaped)
    with pytest.raises(WeightsError, match="state dict"):
        official_to_dsifn({"t1_base.features.0.weight": "not a tensor"})


class Pickled(nn.Module):
    def __init__(self):
        super().__init__()
        self.o1_conv3 = nn.Conv2d(4, 1, 1)


def test_whole_pickled_model_is_refused(tmp_path):
    path = tmp_path / "whole_model.pth"
    torch.save(Pickled(), path)
    with pytest.raises(WeightsError, match=r"model\.state_dict\(\)") as info:
        load_official_pytorch(path)
    # In our words, one line, never torch's advice to load with weights_only=False.
    assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    with pytest.raises(WeightsError, match="does not exist"):
        load_official_pytorch(tmp_path / "absent.pth")
    with pytest.raises(WeightsError, match="is a folder, not a file"):
        load_official_pytorch(tmp_path)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match=r"not a file written by torch\.save"):
        load_official_pytorch(junk)


def test_options_pass_through_unless_they_contradict(shared_official):
    state = shared_official.state_dict()
    model = load_official_pytorch(state, freeze_encoder=False)
    assert all(p.requires_grad for p in model.encoder.parameters())
    with pytest.raises(WeightsError, match="shared_encoder"):
        load_official_pytorch(state, shared_encoder=False)
