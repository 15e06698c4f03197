"""`dsifn predict --scale 10000` on a model that reads reflectance: one line and exit 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import main
from dsifn.contract import CONTRACT_KEY, InputContract
from fixtures.rasters import write_geotiff


@pytest.fixture(scope="module")
def reflectance_model(tmp_path_factory):
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None)
    contract = InputContract.of(model).replace(radiometry="reflectance")
    path = tmp_path_factory.mktemp("model") / "reflectance.pt"
    return save_checkpoint(path, model, meta={CONTRACT_KEY: contract.to_dict()})


def test_a_scale_of_digital_numbers_on_reflectance_is_refused_in_one_line(
    reflectance_model, tmp_path, capsys
):
    rng = np.random.default_rng(0)
    t1 = write_geotiff(tmp_path / "t1.tif", rng.integers(1, 4000, (3, 32, 32), dtype=np.uint16))
    t2 = write_geotiff(tmp_path / "t2.tif", rng.integers(1, 4000, (3, 32, 32), dtype=np.uint16))
    out = tmp_path / "out.tif"
    argv = ["predict", "--checkpoint", str(reflectance_model), "--before", str(t1)]
    argv += ["--after", str(t2), "--out", str(out), "--quiet", "--device", "cpu"]
    assert main([*argv, "--scale", "10000"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "scale=10000 would divide reflectance" in err[0]
    assert not out.exists()
