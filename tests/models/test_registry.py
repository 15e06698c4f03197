"""The table model.name selects from, and checkpoints that record (or predate) the name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dsifn.errors import CheckpointError, ConfigError
from dsifn.models import DSIFN, MODEL_NAMES, MODELS, build_network, model_config, model_entry
from dsifn.models.checkpoint import FORMAT_VERSION, load_checkpoint, save_checkpoint
from dsifn.models.registry import config_dict, entry_of


def test_the_table_holds_dsifn_and_the_four_baselines() -> None:
    assert MODEL_NAMES == ("dsifn", "fc_ef", "fc_siam_conc", "fc_siam_diff", "cdnet")
    for name, entry in MODELS.items():
        assert entry.name == name == entry.config.name
        network = build_network(entry.config(in_channels=4))
        assert type(network) is entry.network and entry_of(network) is entry
        assert network.config.in_channels == 4
    assert MODELS["dsifn"].network.output_strides == (1, 2, 4, 8, 16)
    assert {MODELS[n].network.output_strides for n in MODEL_NAMES[1:]} == {(1,)}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_record_names_its_network_and_rebuilds_its_config(name: str) -> None:
    config = model_entry(name).config(in_channels=2)
    record = config_dict(config)
    assert next(iter(record)) == "name" and record["name"] == name
    assert model_config(record) == config


def test_a_record_without_a_name_is_dsifn() -> None:
    assert model_config({"in_channels": 4}) == MODELS["dsifn"].config(in_channels=4)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        ({"name": "fcef"}, r"model.name must be one of 'dsifn', 'fc_ef', .*; got 'fcef'"),
        ({"name": 3}, r"model.name must be one of"),
        (
            {"name": "cdnet", "dropout": 0.1},
            r"unknown config key\(s\) model.dropout for model.name=cdnet; valid keys: "
            r"model.name, model.in_channels, model.normalization$",
        ),
        ({"name": "fc_ef", "dropout": 2.0}, r"dropout must be in \[0, 1\)"),
        ([1, 2], r"model must be a mapping"),
    ],
)
def test_bad_records_are_refused_in_one_line(record: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        model_config(record)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_a_checkpoint_records_the_name_and_rebuilds_its_network(tmp_path: Path, name: str) -> None:
    model = build_network(model_entry(name).config(in_channels=2)).eval()
    path = save_checkpoint(tmp_path / "m.pt", model)
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION == 2
    assert payload["model_config"]["name"] == name
    loaded = load_checkpoint(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    pair = torch.rand(2, 1, 2, 20, 24).unbind(0)
    with torch.no_grad():
        assert torch.equal(loaded(*pair).stride1, model(*pair).stride1)


def test_a_version_1_checkpoint_without_a_name_loads_as_dsifn(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", DSIFN(in_channels=2))
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 1
    del payload["model_config"]["name"]
    torch.save(payload, path)
    assert isinstance(load_checkpoint(path), DSIFN)


def test_weights_of_another_network_are_refused(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", build_network(model_config({"name": "fc_ef"})))
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["name"] = "fc_siam_diff"  # same config fields, other weights
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="weights do not fit the model configuration"):
        load_checkpoint(path)
