"""The runtimes side by side: exported and quantised as dsifn export does, scored alike."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsifn import save_checkpoint
from dsifn.benchmark import BenchmarkConfig
from dsifn.benchmark.agreement import f1_agreement
from dsifn.benchmark.runtimes import build_runners, fast_runner
from dsifn.cli.main import main
from dsifn.data.synthetic import SyntheticConfig, write_synthetic_dataset
from dsifn.errors import ConfigError
from dsifn.models import DSIFN


def test_the_eager_baseline_runs_first_and_names_are_checked():
    assert BenchmarkConfig(runtimes=("openvino", "eager")).runtimes == ("eager", "openvino")
    assert BenchmarkConfig(runtimes=("fast",)).runtimes == ("eager", "fast")
    with pytest.raises(ConfigError, match="runtimes"):
        BenchmarkConfig(runtimes=("eager", "tensorrt"))
    with pytest.raises(ConfigError, match="twice"):
        BenchmarkConfig(runtimes=("fast", "fast"))


def test_an_unknown_runtime_is_one_line_naming_the_flag(capsys):
    argv = ["benchmark", "--device", "cpu", "--mode", "infer", "--runtimes", "eager,tensorrt"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "runtimes" in err[0] and "tensorrt" in err[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model with a recorded threshold, and a small synthetic dataset of 32-px pairs."""
    root = tmp_path_factory.mktemp("runtimes")
    data = write_synthetic_dataset(
        root / "data", SyntheticConfig(size=32, train=1, val=6, test=3), seed=1, progress=False
    )
    torch.manual_seed(0)
    model = DSIFN(encoder_weights=None, dropout=0.0).eval()
    path = save_checkpoint(root / "model.pt", model, meta={"threshold": 0.5})
    return model, path, str(data)


@pytest.mark.parametrize("int8", ["openvino-int8", "onnxruntime-int8"])
def test_exported_runtimes_predict_what_eager_predicts(trained, tmp_path, int8):
    pytest.importorskip("openvino" if int8.startswith("openvino") else "onnxruntime")
    model, _, data = trained
    fp32 = int8.removesuffix("-int8")
    config = BenchmarkConfig(
        device="cpu",
        size=32,
        runtimes=(fp32, int8),
        data=data,
        calibration_pairs=4,
        precision="fp32",  # OpenVINO would otherwise run bf16 on CPUs that have it
    )
    device = torch.device("cpu")
    runners = build_runners(
        model, config, device, fast_runner(model, config, device, "fp32"), tmp_path
    )
    assert [r.name for r in runners] == ["baseline", fp32, int8]
    assert runners[2].precision == "int8" and "int8" in runners[2].description
    if fp32 == "openvino":  # OpenVINO says what it computes in beside int8: fp32, as asked
        assert runners[1].description.endswith("rest in fp32") and runners[1].precision == "fp32"
    rng = np.random.default_rng(0)
    t1, t2 = (rng.standard_normal((2, 3, 32, 32)).astype(np.float32) for _ in range(2))
    eager, exported, quantized = (r.runner(t1, t2) for r in runners)
    np.testing.assert_allclose(exported, eager, atol=1e-4)
    assert np.abs(quantized - eager).max() < 0.2  # int8 is close, not equal
    assert not np.array_equal(quantized, exported)  # and really is another model
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file())  # exports in the run's folder


def test_f1_agreement_scores_each_runtime_on_the_test_split(trained, tmp_path):
    model, _, data = trained
    config = BenchmarkConfig(device="cpu", size=32, runtimes=("fast",))
    device = torch.device("cpu")
    runners = build_runners(
        model, config, device, fast_runner(model, config, device, "fp32"), tmp_path
    )
    agreement = f1_agreement(runners, data)
    assert list(agreement) == ["baseline", "fast"]
    assert agreement["baseline"]["f1_drop"] == 0.0
    assert 0.0 <= agreement["fast"]["f1"] <= 1.0
    assert abs(agreement["fast"]["f1_drop"]) < 1e-6  # fp32 fast path: the same decisions
