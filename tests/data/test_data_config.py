from __future__ import annotations

import pytest
import yaml

from dsifn.data import AugmentConfig, DataConfig
from dsifn.errors import ConfigError


def test_to_dict_from_dict_round_trip_through_yaml():
    config = DataConfig(
        root="/data/levir",
        layout="generic",
        folders=("before", "after", "labels"),
        bands=(4, 3, 2),
        scale=10000.0,
        ignore_value=255,
        crop_size=256,
        augment=AugmentConfig(scale=(0.8, 1.2), noise=0.01, blur=0.2),
    )
    text = yaml.safe_dump(config.to_dict())
    assert DataConfig.from_dict(yaml.safe_load(text)) == config


def test_augment_as_a_partial_dict_keeps_other_defaults():
    config = DataConfig.from_dict({"root": "x", "augment": {"hflip": 0.0}})
    assert config.augment == AugmentConfig(hflip=0.0)


def test_unknown_keys_are_listed():
    with pytest.raises(
        ConfigError, match=r"unknown config key\(s\) data.colour; valid keys: .*data.crop_size"
    ):
        DataConfig.from_dict({"root": "x", "colour": 1})
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) augment.flip; valid keys"):
        AugmentConfig.from_dict({"flip": 1})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"layout": "kaggle"}, "data.layout must be one of"),
        ({"layout": "generic"}, "needs data.folders"),
        ({"folders": ("a", "b")}, "three folders"),
        ({"bands": (0, 1)}, "1-based"),
        ({"scale": 0}, "positive"),
        ({"crop_size": 0}, "positive"),
    ],
)
def test_bad_values_are_config_errors(options, match):
    with pytest.raises(ConfigError, match=match):
        DataConfig(**options)


def test_off_augmentation_is_all_zero():
    off = AugmentConfig.off()
    assert (off.hflip, off.vflip, off.rotate90, off.brightness, off.noise) == (0, 0, 0, 0, 0)
    assert off.scale == (1.0, 1.0)
