"""A reflectance contract refuses a scale of digital numbers, as the data configuration does."""

from __future__ import annotations

import pytest

from dsifn.contract import InputContract
from dsifn.data import DataConfig, reading_config
from dsifn.errors import ConfigError
from dsifn.normalization import Normalization
from dsifn.scaling import ScalingRule

NORM = Normalization((0.5,) * 3, (0.25,) * 3)


def _reflectance(**fields) -> InputContract:
    return InputContract(3, NORM, radiometry="reflectance", **fields)


def test_a_reflectance_contract_refuses_a_scale_of_digital_numbers():
    with pytest.raises(ConfigError, match=r"scale=10000 would divide reflectance"):
        _reflectance(scaling=ScalingRule.of(10000))
    with pytest.raises(ConfigError, match=r"scale=10000 would divide reflectance"):
        _reflectance().override(scale=10000)
    with pytest.raises(ConfigError, match=r"scale=10000 would divide reflectance"):
        InputContract(3, NORM, scaling=ScalingRule.of(10000)).replace(radiometry="reflectance")
    with pytest.raises(ConfigError, match=r"malformed.*would divide reflectance"):
        InputContract.from_dict(
            {**_reflectance().to_dict(), "scaling": {"rule": "fixed", "scale": 1e4}}
        )


def test_scales_in_reflectance_units_and_digital_numbers_read_as_stored_pass():
    contract, _ = _reflectance().override(scale=0.3)
    assert contract.scaling.scale == 0.3
    assert _reflectance(scaling=ScalingRule.of(100)).scaling.scale == 100
    assert InputContract(3, NORM, scaling=ScalingRule.of(10000)).scaling.scale == 10000


def test_the_contract_and_the_data_configuration_refuse_alike():
    with pytest.raises(ConfigError, match=r"data\.scale=10000 would divide reflectance") as data:
        DataConfig(root="x", radiometry="reflectance", scale=10000)
    with pytest.raises(ConfigError, match=r"^scale=10000 would divide reflectance") as contract:
        _reflectance().override(scale=10000)
    assert str(data.value).split(":")[0] == "data." + str(contract.value).split(":")[0]
    # A contract that passes gives a data configuration that passes.
    assert reading_config(_reflectance(scaling=ScalingRule.of(0.3)), "x").scale == 0.3
