"""One workflow for every network of the registry: save, load, run, export and predict agree.

A network joins every test here by joining :data:`dsifn.models.MODELS`; the command line is
given the model file only, never the network's name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dsifn.cli.main import main
from dsifn.errors import ConfigError
from dsifn.inference.loading import load_runner
from dsifn.inference.runner import TorchRunner
from dsifn.models import MODEL_NAMES, build_network, model_entry
from dsifn.models.checkpoint import load_checkpoint, save_checkpoint
from dsifn.models.registry import ChangeNetwork
from fixtures.rasters import write_geotiff

pytestmark = pytest.mark.usefixtures("one_thread")

THRESHOLD = 0.4
BASELINES = MODEL_NAMES[1:]
# DSIFN's exports have tests of their own (test_onnx, test_openvino); here they are slow.
EVERY = [pytest.param(n, marks=pytest.mark.slow) if n == "dsifn" else n for n in MODEL_NAMES]


def _calibrated(name: str) -> ChangeNetwork:
    """A fresh network whose BatchNorm statistics are one batch's, so outputs vary clearly."""
    model = build_network(model_entry(name).config())
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # the plain average of what it sees: one batch
    model.train()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model(*torch.randn(2, 4, 3, 32, 32, generator=generator).unbind(0))
    return model.eval()


@pytest.fixture(scope="module", params=MODEL_NAMES)
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The checkpoint of a calibrated network, threshold 0.4."""
    folder = tmp_path_factory.mktemp(request.param)
    model = _calibrated(request.param)
    return save_checkpoint(folder / "m.pt", model, meta={"threshold": THRESHOLD})


def _pair(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t1, t2 = (rng.normal(size=shape).astype(np.float32) for _ in "ab")
    return t1, t2


def test_save_load_and_the_fast_path_agree(saved: Path) -> None:
    model = load_checkpoint(saved)
    eager = load_runner(saved, device="cpu", precision="fp32")
    assert eager.contract.threshold == THRESHOLD
    t1, t2 = _pair((2, 3, 40, 36), seed=0)  # not a multiple of 16: padded and cropped
    with torch.no_grad():
        logits = model(torch.from_numpy(t1), torch.from_numpy(t2)).stride1
    expected = torch.sigmoid(logits).numpy()
    assert expected.std() > 1e-3
    # The runner is the fast path: NHWC, BatchNorm folded (every baseline's BatchNorm folds).
    np.testing.assert_allclose(eager(t1, t2), expected, atol=1e-5)
    assert model_entry(type(model.config).name).title in eager.describe()


def _geotiff_pair(folder: Path) -> list[str]:
    rng = np.random.default_rng(5)
    dates = [
        write_geotiff(folder / f"{d}.tif", rng.integers(1, 255, (3, 48, 40), dtype=np.uint8))
        for d in ("t1", "t2")
    ]
    return ["--before", str(dates[0]), "--after", str(dates[1])]


def _predict(model: Path, out: Path, pair: list[str], *extra: str) -> np.ndarray:
    import rasterio

    argv = ["predict", "--checkpoint", str(model), "--out", str(out), *pair, "--quiet"]
    argv += ["--device", "cpu", "--tile-size", "32", "--overlap", "8", *extra]
    assert main(argv) == 0
    with rasterio.open(out) as raster:
        values: np.ndarray = raster.read(1)
    return values


@pytest.mark.slow  # an ONNX export and two scene predictions: about 15 s a network on 2 cores
@pytest.mark.parametrize("name", EVERY)
def test_onnx_export_and_predict_agree_with_the_checkpoint(name: str, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from dsifn.interop.onnx import read_info

    checkpoint = save_checkpoint(tmp_path / "m.pt", _calibrated(name), meta={"threshold": 0.4})
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(checkpoint), "-o", str(onnx_file)]) == 0
    info = read_info(onnx_file)
    strides = build_network(model_entry(name).config()).output_strides
    assert info["outputs"] == [f"prob_stride{s}" for s in strides]
    assert info["model_config"]["name"] == name and info["threshold"] == THRESHOLD
    pair = _geotiff_pair(tmp_path)
    by_torch = _predict(checkpoint, tmp_path / "torch.tif", pair, "--precision", "fp32")
    by_onnx = _predict(onnx_file, tmp_path / "onnx.tif", pair)
    assert by_torch.std() > 1e-3
    np.testing.assert_allclose(by_onnx, by_torch, atol=1e-5)


@pytest.mark.slow  # an OpenVINO conversion: about 10 s a network on 2 cores
@pytest.mark.parametrize("name", BASELINES)
def test_openvino_export_runs_as_the_checkpoint(name: str, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    checkpoint = save_checkpoint(tmp_path / "m.pt", _calibrated(name))
    xml = tmp_path / "m.xml"
    assert main(["export", "--checkpoint", str(checkpoint), "-o", str(xml)]) == 0
    t1, t2 = _pair((1, 3, 48, 40), seed=2)
    torch_runner = load_runner(checkpoint, device="cpu", precision="fp32")
    openvino = load_runner(xml, device="cpu", precision="fp32")
    np.testing.assert_allclose(openvino(t1, t2), torch_runner(t1, t2), atol=1e-5)


def test_the_torchscript_exporter_leaves_the_model_in_eval_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    from dsifn.interop.onnx import export_onnx, read_info

    export = torch.onnx.export

    def torchscript_only(*args: object, **kwargs: object) -> object:
        if kwargs.get("dynamo"):
            raise RuntimeError("dynamo is unavailable in this test")
        return export(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.onnx, "export", torchscript_only)
    model = _calibrated("fc_siam_diff")
    export_onnx(model, tmp_path / "m.onnx")
    assert read_info(tmp_path / "m.onnx")["exporter"] == "torchscript"
    # The exporter restores the mode it found, recursively: the wrapper's, which is eval too.
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", BASELINES)
def test_scene_wide_attention_is_refused_for_a_baseline_in_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoint = save_checkpoint(tmp_path / "m.pt", build_network(model_entry(name).config()))
    out = tmp_path / "map.tif"
    pair = _geotiff_pair(tmp_path)
    argv = ["predict", "--checkpoint", str(checkpoint), "--out", str(out), *pair]
    assert main([*argv, "--attention", "scene"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"dsifn predict: error: scene-wide attention holds DSIFN's channel attention fixed, "
        f"and a {name} model has none (nor any other scene-wide operation): use "
        "--attention tile"
    )
    assert not out.exists()
    for fast in (True, False):
        runner = TorchRunner(load_checkpoint(checkpoint), device="cpu", fast=fast)
        with pytest.raises(ConfigError, match="DSIFN's"):
            runner.attention_statistics(*_pair((1, 3, 32, 32), 0), 0, {}, np.ones((1, 32, 32)))


@pytest.mark.slow  # int8 quantisations and a small benchmark: about 40 s on 2 cores
def test_evaluate_int8_export_and_benchmark_take_a_baseline_checkpoint(
    tmp_path: Path, levir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("nncf")
    checkpoint = save_checkpoint(tmp_path / "m.pt", _calibrated("fc_siam_diff"))
    data = ["--data", str(levir)]
    assert main(["evaluate", "--checkpoint", str(checkpoint), *data, "--tune-threshold"]) == 0
    assert "tuned threshold" in capsys.readouterr().out
    tuned = load_runner(checkpoint).contract.threshold
    for out in (tmp_path / "int8.onnx", tmp_path / "int8.xml"):
        argv = ["export", "--checkpoint", str(checkpoint), "-o", str(out), "--int8"]
        assert main([*argv, "--calibration", str(levir)]) == 0
        runner = load_runner(out, device="cpu")
        assert runner.contract.threshold == tuned and "FC-Siam-diff" in runner.describe()
        assert main(["evaluate", "--checkpoint", str(out), *data]) == 0
    argv = ["benchmark", "--checkpoint", str(checkpoint), "--device", "cpu", "--size", "32"]
    argv += ["--steps", "1", "--warmup", "0", "--rounds", "1", "--scene-size", "48"]
    assert main([*argv, "--accuracy-pairs", "1", "--runtimes", "eager,fast,onnxruntime"]) == 0
    assert "infer  onnxruntime" in capsys.readouterr().out
