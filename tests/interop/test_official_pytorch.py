"""Loading the authors' PyTorch DSIFN state dicts.

``Official`` below re-creates the authors' module layout from the description of their PyTorch
file (attribute names, Sequential positions, forward order): it is the reference our loader
must match, so it is written here without any use of dsifn's modules.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dsifn.errors import WeightsError
from dsifn.interop.official_pytorch import (
    load_official_pytorch,
    official_to_dsifn,
    read_official_state_dict,
)
from dsifn.models.dsifn import DSIFN

# torchvision vgg16 "D" layout: 31 modules, taps after the ReLUs at indices 3, 8, 15, 22, 29.
VGG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
TAPS = (3, 8, 15, 22, 29)


class VGGBase(nn.Module):
    def __init__(self, in_channels=3):
        super().__init__()
        layers, c = [], in_channels
        for v in VGG_D:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        feats = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in TAPS:
                feats.append(x)
        return feats  # relu1_2 .. relu5_3


class SpatialAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x):
        pooled = torch.cat([x.mean(1, keepdim=True), x.max(1, keepdim=True)[0]], 1)
        return torch.sigmoid(self.conv1(pooled))


class ChannelAttention(nn.Module):
    def __init__(self, c, ratio=8):
        super().__init__()
        self.fc1 = nn.Conv2d(c, c // ratio, 1, bias=False)
        self.fc2 = nn.Conv2d(c // ratio, c, 1, bias=False)

    def forward(self, x):
        avg = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        mx = self.fc2(F.relu(self.fc1(F.adaptive_max_pool2d(x, 1))))
        return torch.sigmoid(avg + mx)


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.PReLU(), nn.BatchNorm2d(cout), nn.Dropout(0.6)
    )


class Official(nn.Module):
    def __init__(self, t1_base, t2_base):
        super().__init__()
        self.t1_base, self.t2_base = t1_base, t2_base
        for k in range(1, 6):
            setattr(self, f"sa{k}", SpatialAttention())
        for k, c in zip(range(1, 6), (1024, 1536, 768, 384, 192), strict=True):
            setattr(self, f"ca{k}", ChannelAttention(c))
        self.bn_ca1 = nn.BatchNorm2d(1024)  # built, never used
        self.bn_ca2 = nn.BatchNorm2d(1536)  # built, never used
        self.o1_conv1, self.o1_conv2 = block(1024, 512), block(512, 512)
        self.bn_sa1 = nn.BatchNorm2d(512)
        self.o1_conv3 = nn.Conv2d(512, 1, 1)
        self.trans_conv1 = nn.ConvTranspose2d(512, 512, 2, stride=2)
        self.o2_conv1, self.o2_conv2, self.o2_conv3 = (
            block(1536, 512),
            block(512, 256),
            block(256, 256),
        )
        self.bn_sa2 = nn.BatchNorm2d(256)
        self.o2_conv4 = nn.Conv2d(256, 1, 1)
        self.trans_conv2 = nn.ConvTranspose2d(256, 256, 2, stride=2)
        self.o3_conv1, self.o3_conv2, self.o3_conv3 = (
            block(768, 256),
            block(256, 128),
            block(128, 128),
        )
        self.bn_sa3 = nn.BatchNorm2d(128)
        self.o3_conv4 = nn.Conv2d(128, 1, 1)
        self.trans_conv3 = nn.ConvTranspose2d(128, 128, 2, stride=2)
        self.o4_conv1, self.o4_conv2, self.o4_conv3 = block(384, 128), block(128, 64), block(64, 64)
        self.bn_sa4 = nn.BatchNorm2d(64)
        self.o4_conv4 = nn.Conv2d(64, 1, 1)
        self.trans_conv4 = nn.ConvTranspose2d(64, 64, 2, stride=2)
        self.o5_conv1, self.o5_conv2, self.o5_conv3 = block(192, 64), block(64, 32), block(32, 16)
        self.bn_sa5 = nn.BatchNorm2d(16)
        self.o5_conv4 = nn.Conv2d(16, 1, 1)

    def forward(self, t1, t2):
        f1, f2 = self.t1_base(t1), self.t2_base(t2)
        x = torch.cat([f1[4], f2[4]], 1)
        x = self.o1_conv2(self.o1_conv1(x))
        x = self.bn_sa1(self.sa1(x) * x)
        out1 = torch.sigmoid(self.o1_conv3(x))
        x = torch.cat([self.trans_conv1(x), f1[3], f2[3]], 1)
        x = self.ca2(x) * x
        x = self.o2_conv3(self.o2_conv2(self.o2_conv1(x)))
        x = self.bn_sa2(self.sa2(x) * x)
        out2 = torch.sigmoid(self.o2_conv4(x))
        x = torch.cat([self.trans_conv2(x), f1[2], f2[2]], 1)
        x = self.ca3(x) * x
        x = self.o3_conv3(self.o3_conv2(self.o3_conv1(x)))
        x = self.bn_sa3(self.sa3(x) * x)
        out3 = torch.sigmoid(self.o3_conv4(x))
        x = torch.cat([self.trans_conv3(x), f1[1], f2[1]], 1)
        x = self.ca4(x) * x
        x = self.o4_conv3(self.o4_conv2(self.o4_conv1(x)))
        x = self.bn_sa4(self.sa4(x) * x)
        out4 = torch.sigmoid(self.o4_conv4(x))
        x = torch.cat([self.trans_conv4(x), f1[0], f2[0]], 1)
        x = self.ca5(x) * x
        x = self.o5_conv3(self.o5_conv2(self.o5_conv1(x)))
        x = self.bn_sa5(self.sa5(x) * x)
        out5 = torch.sigmoid(self.o5_conv4(x))
        return out5, out4, out3, out2, out1  # finest first


def randomise(model):
    """Weights that keep activations O(1) through VGG16, and non-trivial BatchNorm statistics."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight[0].numel() if isinstance(m, nn.Conv2d) else m.weight.shape[0]
                m.weight.normal_(0, (2.0 / fan_in) ** 0.5, generator=gen)
                if m.bias is not None:
                    m.bias.normal_(0, 0.1, generator=gen)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.normal_(0, 0.2, generator=gen)
                m.running_mean.normal_(0, 0.3, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
                m.num_batches_tracked.fill_(17)
            elif isinstance(m, nn.PReLU):
                m.weight.uniform_(0.05, 0.4, generator=gen)
    return model.eval()


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
