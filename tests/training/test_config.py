"""Training configuration: paper defaults, bundled YAML files, checked dotted overrides."""

from __future__ import annotations

import pytest
import yaml

from dsifn.errors import ConfigError
from dsifn.training.config import (
    BUNDLED_CONFIGS,
    TrainConfig,
    apply_overrides,
    load_config,
    parse_overrides,
)


def test_defaults_are_the_paper_recipe():
    cfg = TrainConfig()
    assert (cfg.optim.optimizer, cfg.optim.lr) == ("adam", 1e-4)
    assert cfg.schedule.scheduler == "plateau"
    assert (cfg.schedule.plateau_factor, cfg.schedule.plateau_patience) == (0.1, 5)
    assert cfg.schedule.early_stop_patience == 20
    assert cfg.data.crop_size == 512
    assert cfg.model.freeze_encoder and cfg.model.shared_encoder
    assert cfg.model.encoder_weights == "imagenet"
    assert cfg.loss.weights == (1.0,) * 5
    assert (cfg.loss.bce_weight, cfg.loss.dice_weight) == (1.0, 1.0)
    assert cfg.validation.threshold == 0.5


def test_default_yaml_spells_out_exactly_the_built_in_defaults():
    assert load_config("default") == TrainConfig()


def test_bundled_configs_load():
    assert set(BUNDLED_CONFIGS) == {"default", "levir", "dsifn_cd"}
    levir = load_config("levir")
    assert (levir.data.layout, levir.data.crop_size) == ("levir", 256)
    dsifn_cd = load_config("dsifn_cd")
    assert (dsifn_cd.data.layout, dsifn_cd.data.crop_size) == ("dsifn", None)
    assert levir.optim == dsifn_cd.optim == TrainConfig().optim


def test_a_dataset_folder_named_like_a_bundled_config_does_not_hide_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "levir" / "train").mkdir(parents=True)
    assert load_config("levir").data.crop_size == 256
    (tmp_path / "dsifn_cd").write_text("optim:\n  lr: 0.5\n")
    assert load_config("dsifn_cd").optim.lr == 0.5  # a file of that name is the user's config


def test_yaml_round_trip(tmp_path):
    cfg = load_config("levir", ["data.root=/data/x", "data.bands=[3, 2, 1]", "model.in_channels=3"])
    cfg.save(tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["data"]["bands"] == [3, 2, 1]


def test_overrides_are_dotted_typed_and_allow_unambiguous_short_keys():
    cfg = load_config(None, ["optim.lr=3e-4", "data.root=/x", "epochs=2", "run.compile=true"])
    assert cfg.optim.lr == pytest.approx(3e-4)
    assert cfg.data.root == "/x"
    assert cfg.schedule.epochs == 2
    assert cfg.run.compile is True
    # Text fields keep the text: a folder called 2024 is not the number 2024.
    assert load_config(None, ["data.root=2024"]).data.root == "2024"
    # Nullable fields take null; nested sections take dotted keys or mappings.
    cfg = load_config(None, ["schedule.early_stop_patience=null", "data.augment.hflip=0"])
    assert cfg.schedule.early_stop_patience is None
    assert cfg.data.augment.hflip == 0.0
    cfg = load_config(None, ["model.normalization={mean: [0.5, 0.5, 0.5], std: [0.2, 0.2, 0.2]}"])
    assert cfg.model.input_normalization.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("optim.lrr=1", r"unknown config key 'optim.lrr'; valid keys here: .*optim\.lr,"),
        ("nope=1", r"valid keys here: model, data, loss, optim"),
        ("epochs=two", r"schedule.epochs must be an integer; got 'two'"),
        ("run.seed=1.5", r"run.seed must be an integer"),
        ("run.compile=maybe", r"run.compile must be true or false"),
        ("optim.optimizer=lion", r"optim.optimizer must be one of 'adam', 'adamw', 'sgd'"),
        ("model.variant=tf", r"model.variant must be one of"),
        ("model.dropout=1.5", r"model: dropout must be in \[0, 1\)"),
        ("optim.betas=[0.9]", r"optim.betas must be a list of 2 values"),
        ("optim.lr.x=1", r"optim.lr has no sub-keys"),
        ("optim.lr=-1", r"optim.lr must be positive"),
        ("run.batch_size=null", r"run.batch_size must be an integer; got None"),
    ],
)
def test_bad_overrides_name_the_key_and_what_is_valid(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_override_syntax_and_ambiguity():
    with pytest.raises(ConfigError, match="not key=value"):
        parse_overrides(["lr"])
    # `split` is a field of validation only, `batch_size` of both validation and run.
    assert apply_overrides(TrainConfig(), {"split": "test"}).validation.split == "test"
    with pytest.raises(ConfigError, match=r"ambiguous: use one of validation.batch_size, run"):
        apply_overrides(TrainConfig(), {"batch_size": "4"})


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a file nor a bundled config"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("optim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) optim.learning_rate"):
        load_config(unknown)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listed)


def test_memory_layout_is_automatic_unless_opted_out():
    assert TrainConfig().run.channels_last is None  # the step picks: NHWC on CUDA and CPUs
    assert load_config("default").run.channels_last is None
    assert load_config("default", ["run.channels_last=false"]).run.channels_last is False
    assert load_config("default", ["run.channels_last=null"]).run.channels_last is None
    with pytest.raises(ConfigError, match="channels_last"):
        load_config("default", ["run.channels_last=sometimes"])


def test_model_name_selects_the_network_and_old_configs_are_dsifn(tmp_path):
    assert type(TrainConfig().model).name == "dsifn"
    assert TrainConfig().to_dict()["model"]["name"] == "dsifn"
    cfg = load_config("default", ["model.name=fc_siam_diff", "model.dropout=0.1"])
    assert (type(cfg.model).name, cfg.model.dropout) == ("fc_siam_diff", 0.1)
    cfg.save(tmp_path / "c.yaml")
    assert yaml.safe_load((tmp_path / "c.yaml").read_text())["model"]["name"] == "fc_siam_diff"
    assert load_config(tmp_path / "c.yaml") == cfg
    old = tmp_path / "old.yaml"  # written before model.name existed
    old.write_text("model:\n  dropout: 0.3\n")
    assert (type(load_config(old).model).name, load_config(old).model.dropout) == ("dsifn", 0.3)


def test_changing_the_network_keeps_what_describes_the_data_only():
    # in_channels and normalization carry over; DSIFN's keys give way to FC-EF's defaults.
    dsifn = load_config("default", ["model.in_channels=4", "model.dropout=0.5"])
    cfg = apply_overrides(dsifn, {"name": "fc_ef"})
    assert type(cfg.model).name == "fc_ef"
    assert (cfg.model.in_channels, cfg.model.dropout) == (4, 0.2)
    # model.* keys given with the name set the new network's, whatever their order.
    both = apply_overrides(dsifn, {"model.dropout": "0.1", "model.name": "fc_ef"})
    assert both.model.dropout == 0.1
    back = apply_overrides(cfg, {"model.name": "dsifn"})
    assert back.model.in_channels == 4 and back.model.encoder_weights == "imagenet"  # paper's
    assert apply_overrides(cfg, {"model.name": "fc_ef"}) == cfg  # the same network: unchanged


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (
            ["model.name=cdnet", "model.dropout=0.1"],
            r"unknown config key 'model.dropout' for model.name=cdnet; valid keys here: "
            r"model.name, model.in_channels, model.normalization$",
        ),
        (["model.name=unet"], r"model.name must be one of 'dsifn', 'fc_ef'"),
        (["model.name=fc_ef", "encoder_weights=null"], r"unknown config key 'encoder_weights'"),
    ],
)
def test_model_keys_are_checked_against_the_network_named(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("default", overrides)


def test_a_yaml_model_section_is_checked_against_its_network(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: fc_ef\n  encoder_weights: null\n")
    with pytest.raises(ConfigError, match=r"model.encoder_weights for model.name=fc_ef; valid"):
        load_config(path)


def test_a_network_with_one_output_takes_the_first_loss_weight():
    from dsifn.training.config import LossConfig, loss_weights

    assert loss_weights(LossConfig(), 5) == (1.0,) * 5
    assert loss_weights(LossConfig(weights=(0.5, 1, 1, 1, 1)), 1) == (0.5,)
    with pytest.raises(ConfigError, match=r"FC-EF trains on its first 1 output\(s\).*all zero"):
        loss_weights(LossConfig(weights=(0, 1, 1, 1, 1)), 1, "FC-EF")
