"""dsifn.interop.keras3: the Keras 3 model matches the PyTorch model (torch backend, CPU)."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # keras reads it at first import

import subprocess
import sys

import numpy as np
import pytest
import torch

from dsifn.models import DSIFN
from dsifn.models.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def keras3():
    """The Keras 3 port; its tests are skipped where Keras is not installed."""
    pytest.importorskip("keras")
    import dsifn.interop.keras3

    return dsifn.interop.keras3


def randomise(model):
    """Non-default values for everything the Keras side must copy (BN stats, PReLU slopes)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 1.5 + 0.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif tensor.ndim <= 3:  # PReLU slopes, BN weights
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.25)
            else:  # convolution kernels: He-scaled so activations keep their size
                fan_in = tensor[0].numel() if ".up." not in name else tensor.shape[0] * 4
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2 / fan_in) ** 0.5)
    return model.eval()


def _compare(torch_model, keras_model, height, width):
    rng = np.random.default_rng(0)
    bands = torch_model.config.in_channels
    t1, t2 = (rng.normal(size=(2, bands, height, width)).astype("float32") for _ in "ab")
    with torch.no_grad():
        expected = torch_model(torch.from_numpy(t1), torch.from_numpy(t2))
    got = keras_model([t1.transpose(0, 2, 3, 1), t2.transpose(0, 2, 3, 1)], training=False)
    assert len(got) == 5
    for exp, out in zip(expected, got, strict=True):
        out = np.asarray(out.detach().cpu()).transpose(0, 3, 1, 2)
        exp = exp.numpy()
        assert out.shape == exp.shape
        assert exp.std() > 5e-3  # varied maps, not constants
        np.testing.assert_allclose(out, exp, atol=1e-4, rtol=0)


def test_keras_model_matches_pytorch(keras3):
    # "pytorch" variant: one PReLU slope per layer, any multiple of 16, shared encoder.
    torch_model = randomise(DSIFN(variant="pytorch"))
    keras_model = keras3.transfer_weights(torch_model, keras3.build_keras_model(torch_model.config))
    _compare(torch_model, keras_model, 32, 48)


def test_keras_variant_from_checkpoint(keras3, tmp_path):
    # "keras" variant (per-element PReLU, fixed size) with 4 bands, two encoders, stage-1 attention.
    options = {"in_channels": 4, "shared_encoder": False, "stage1_channel_attention": True}
    torch_model = randomise(DSIFN(variant="keras", input_size=32, **options))
    path = save_checkpoint(tmp_path / "m.pt", torch_model)
    keras_model = keras3.keras_model_from_checkpoint(path)
    assert keras_model.inputs[0].shape == (None, 32, 32, 4)
    _compare(torch_model, keras_model, 32, 32)


def test_import_dsifn_does_not_import_keras():
    code = "import sys, dsifn, dsifn.cli.main; sys.exit('keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_without_keras_the_import_names_the_extra_in_one_line():
    # A None entry in sys.modules makes "import keras" fail as if keras were not installed.
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "from dsifn.errors import ConfigError\n"
        "try:\n"
        "    import dsifn.interop.keras3\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.count("\n") == 1
    assert "pip install 'dsifn[keras]'" in done.stdout
