"""Models the interop tests share, built once a session: a DSIFN, its checkpoint and exports.

Exports are slow (tens of seconds on 2 cores), so the ONNX and OpenVINO fp32 files are made
once, by ``dsifn export`` itself, and only read by the tests; a test that writes makes its own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from dsifn.cli.main import main
from dsifn.models import DSIFN
from dsifn.models.checkpoint import save_checkpoint
from fixtures.datasets import write_levir

THRESHOLD = 0.4  # recorded in the checkpoint: exports must carry it


def _randomise(model: DSIFN) -> DSIFN:
    """Weights that make the outputs depend clearly on the input (He-scaled, varied BN)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif name.endswith(("running_mean", "bias")):
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif tensor.ndim <= 3:
                tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.5 + 0.5)
            else:
                fan_in = tensor[0].numel() if ".up." not in name else tensor.shape[0] * 4
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * (2 / fan_in) ** 0.5)
    return model.eval()


@pytest.fixture(scope="session")
def randomise() -> Callable[[DSIFN], DSIFN]:
    """Give a DSIFN weights whose outputs depend clearly on the input."""
    return _randomise


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[DSIFN, Path]:
    """A randomised "pytorch" DSIFN and its checkpoint (threshold 0.4)."""
    folder = tmp_path_factory.mktemp("model")
    model = _randomise(DSIFN(variant="pytorch"))
    return model, save_checkpoint(folder / "m.pt", model, meta={"threshold": THRESHOLD})


@pytest.fixture(scope="session")
def onnx_file(checkpoint: tuple[DSIFN, Path]) -> Path:
    """``dsifn export --format onnx`` of the checkpoint (checked against PyTorch)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    path = checkpoint[1].parent / "model.onnx"
    argv = ["export", "--checkpoint", str(checkpoint[1]), "--format", "onnx", "-o", str(path)]
    assert main(argv) == 0
    return path


@pytest.fixture(scope="session")
def openvino_file(checkpoint: tuple[DSIFN, Path]) -> Path:
    """``dsifn export --format openvino`` of the checkpoint (checked against PyTorch)."""
    pytest.importorskip("openvino")
    path = checkpoint[1].parent / "model.xml"
    argv = ["export", "--checkpoint", str(checkpoint[1]), "--format", "openvino"]
    argv += ["--out", str(path)]
    assert main(argv) == 0
    return path


@pytest.fixture(scope="session")
def levir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LEVIR-style dataset of 32-pixel pairs: 2 train, 6 val, 3 test."""
    return write_levir(tmp_path_factory.mktemp("data") / "levir", size=32, counts=(2, 6, 3))
