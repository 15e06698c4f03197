"""The one config mechanism: every config builds from plain data by its field types and back."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from dsifn._config import Config, build
from dsifn.data import AugmentConfig, DataConfig
from dsifn.data.synthetic import SyntheticConfig
from dsifn.errors import ConfigError
from dsifn.models import DSIFNConfig, Normalization
from dsifn.training.config import LossConfig, OptimConfig, RunConfig, TrainConfig

CONFIGS = [
    TrainConfig(),
    LossConfig(weights=(1.0, 0.5, 0.5, 0.25, 0.25), pos_weight=2.0),
    OptimConfig(optimizer="adamw", betas=(0.8, 0.99)),
    RunConfig(precision="bf16", num_workers=0),
    DataConfig(
        root="r", layout="generic", folders=("a", "b", "c"), bands=("B04", "B03"), stretch=(2, 98)
    ),
    AugmentConfig(scale=(0.5, 2.0), blur_sigma=(1.0, 1.0)),
    DSIFNConfig(in_channels=2, normalization=Normalization(mean=(0.1, 0.2), std=(1.0, 2.0))),
    DSIFNConfig(variant="keras", input_size=64, encoder_weights="imagenet"),
    Normalization(mean=(103.9,), std=(1.0,), scale=255.0, reverse_bands=True),
    SyntheticConfig(size=32, buildings=(1, 2), building_size=(0.2, 0.3), shift=1),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: type(c).__name__)
def test_every_config_round_trips_through_yaml(config: Config) -> None:
    text = yaml.safe_dump(config.to_dict())
    assert "!!python" not in text  # plain types only
    assert type(config).from_dict(yaml.safe_load(text)) == config


def test_python_callers_may_pass_lists_and_dicts_as_yaml_does() -> None:
    loss = LossConfig(weights=[1, 1, 2, 2, 3])  # type: ignore[arg-type]
    assert loss.weights == (1.0, 1.0, 2.0, 2.0, 3.0)
    assert all(type(w) is float for w in loss.weights)
    data = DataConfig(bands=[4, 3, 2], augment={"hflip": 0.0})  # type: ignore[arg-type]
    assert data.bands == (4, 3, 2) and data.augment == AugmentConfig(hflip=0.0)
    model = DSIFNConfig(normalization={"mean": [0.5], "std": [0.25]}, in_channels=1)  # type: ignore[arg-type]
    assert model.normalization == Normalization(mean=(0.5,), std=(0.25,))
    # NumPy numbers (dsifn stats computes them) become Python ones: checkpoints stay plain.
    norm = Normalization(mean=tuple(np.float32([0.5, 0.25])), std=(np.float32(1), 2))
    assert all(type(v) is float for v in (*norm.mean, *norm.std))


def test_a_list_that_does_not_fit_is_explained_by_the_config_itself() -> None:
    with pytest.raises(ConfigError, match=r"data.folders must name three folders"):
        DataConfig(folders=["a", "b"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"loss.weights needs 5 non-negative numbers"):
        LossConfig(weights=[1, 1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cls", "values", "where", "message"),
    [
        (DataConfig, {"bands": 3}, "data", r"^data.bands must be a list; got 3$"),
        (DataConfig, {"bands": [1, "B04"]}, "data", r"^data.bands: data.bands must be an integer"),
        (DataConfig, {"augment": {"noise": "x"}}, "data", r"^data.augment.noise must be a number"),
        (RunConfig, {"precision": "int8"}, "run", r"^run.precision must be one of 'auto', 'fp32'"),
        (DSIFNConfig, {"in_channels": 2.0}, "model", r"^model.in_channels must be an integer"),
        (
            DSIFNConfig,
            {"normalization": {"mean": [1], "std": [1], "colour": 1}},
            "model_config",
            r"^unknown config key\(s\) model_config.normalization.colour; valid keys: "
            r"model_config.normalization.mean,",
        ),
        (SyntheticConfig, {"size": 8}, "synthetic", r"^synthetic size must be at least 16"),
        (TrainConfig, ["optim"], "", r"^config must be a mapping of keys; got list"),
    ],
)
def test_bad_values_are_one_line_naming_the_dotted_key(cls, values, where, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        build(cls, values, where)
    assert "\n" not in str(info.value)


def test_numpy_integers_from_plain_data_become_ints() -> None:
    config = DSIFNConfig.from_dict({"in_channels": np.int64(4)})
    assert config.in_channels == 4 and type(config.in_channels) is int


def test_model_config_keeps_tuples_as_checkpoints_have_always_recorded_them() -> None:
    config = DSIFNConfig(in_channels=1, normalization=Normalization(mean=(0.5,), std=(0.25,)))
    recorded = config.to_dict()["normalization"]
    assert recorded["mean"] == (0.5,) and isinstance(recorded["mean"], tuple)
    assert TrainConfig(model=config).to_dict()["model"]["normalization"]["mean"] == [0.5]
