"""ONNX export (dsifn export) and OnnxRunner against PyTorch, and predict with onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import onnx
import rasterio

from dsifn.cli.main import main
from dsifn.errors import InputError, WeightsError
from dsifn.inference.loading import load_runner
from dsifn.interop.onnx import METADATA_KEY, OUTPUT_NAMES, OnnxRunner, export_onnx, read_info
from dsifn.models import DSIFN
from fixtures.rasters import write_geotiff


@pytest.fixture(scope="module")
def exported(checkpoint, onnx_file):
    return (*checkpoint, onnx_file)


def _torch_probabilities(model, t1, t2):
    with torch.no_grad():
        return [torch.sigmoid(o).numpy() for o in model(torch.from_numpy(t1), torch.from_numpy(t2))]


@pytest.mark.parametrize("shape", [(1, 3, 32, 48), (2, 3, 64, 32), (1, 3, 40, 36)])
def test_onnx_matches_pytorch_at_several_sizes(exported, shape):
    # Two multiples of 16 prove the dynamic axes; 40x36 goes through the runner's padding.
    model, _, path = exported
    rng = np.random.default_rng(sum(shape))
    t1, t2 = (rng.normal(size=shape).astype(np.float32) for _ in "ab")
    got = OnnxRunner(path, device="cpu").run_all(t1, t2)
    expected = _torch_probabilities(model, t1, t2)
    for exp, out in zip(expected, got, strict=True):
        assert out.shape == exp.shape
        assert exp.std() > 1e-3
        np.testing.assert_allclose(out, exp, atol=1e-4, rtol=0)


def test_metadata_and_runner_attributes(exported, tmp_path, capsys):
    model, checkpoint, path = exported
    graph = onnx.load(str(path), load_external_data=False)
    assert [o.name for o in graph.graph.output] == list(OUTPUT_NAMES)
    info = json.loads({p.key: p.value for p in graph.metadata_props}[METADATA_KEY])
    assert info["model_config"]["variant"] == "pytorch" and info["tile_size"] is None
    assert read_info(path) == info and info["precision"] == "fp32"
    runner = load_runner(path, runtime="onnxruntime", device="cpu")
    assert isinstance(runner, OnnxRunner)
    assert runner.threshold == 0.4 and runner.tile_size is None and runner.in_channels == 3
    assert runner.normalization == model.config.input_normalization
    with pytest.raises(InputError, match="bands"):
        runner(np.zeros((1, 4, 32, 32), np.float32), np.zeros((1, 4, 32, 32), np.float32))
    single = OnnxRunner(path, device="cpu", threads=1)
    assert single.session.get_session_options().intra_op_num_threads == 1
    # Refused without --overwrite, the file untouched; a non-dsifn ONNX file is refused.
    before = path.read_bytes()
    argv = ["export", "--checkpoint", str(checkpoint), "-o", str(path)]
    assert main(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before
    plain = tmp_path / "plain.onnx"
    stripped = onnx.load(str(path))
    del stripped.metadata_props[:]
    onnx.save(stripped, str(plain))
    with pytest.raises(WeightsError, match="not exported by dsifn"):
        OnnxRunner(plain, device="cpu")


@pytest.mark.slow  # a second full export: about 25 s of CPU
def test_keras_variant_exports_at_its_fixed_size(tmp_path, randomise):
    model = randomise(DSIFN(variant="keras", input_size=32))
    path = export_onnx(model, tmp_path / "k.onnx", meta={"tile_size": 32}, check=False)
    runner = OnnxRunner(path, device="cpu")
    assert runner.tile_size == 32
    rng = np.random.default_rng(3)
    t1, t2 = (rng.normal(size=(2, 3, 32, 32)).astype(np.float32) for _ in "ab")
    np.testing.assert_allclose(runner(t1, t2), _torch_probabilities(model, t1, t2)[0], atol=1e-4)
    with pytest.raises(InputError, match="32x32"):
        runner(t1[..., :16, :16], t2[..., :16, :16])


def test_predict_with_onnxruntime_matches_torch(exported, tmp_path):
    _, checkpoint, path = exported
    rng = np.random.default_rng(5)
    t1 = write_geotiff(tmp_path / "t1.tif", rng.integers(1, 255, (3, 48, 40), dtype=np.uint8))
    t2 = write_geotiff(tmp_path / "t2.tif", rng.integers(1, 255, (3, 48, 40), dtype=np.uint8))
    common = ["--before", str(t1), "--after", str(t2), "--quiet", "--device", "cpu"]
    common += ["--tile-size", "32", "--overlap", "8"]
    out_onnx, out_torch = tmp_path / "onnx.tif", tmp_path / "torch.tif"
    argv = ["predict", "--runtime", "onnxruntime", "--checkpoint", str(path)]
    assert main([*argv, "--out", str(out_onnx), *common]) == 0
    argv = ["predict", "--checkpoint", str(checkpoint), "--precision", "fp32"]
    assert main([*argv, "--out", str(out_torch), *common]) == 0
    with rasterio.open(out_onnx) as a, rasterio.open(out_torch) as b:
        assert a.crs == b.crs and a.transform == b.transform
        onnx_map, torch_map = a.read(1), b.read(1)
    assert torch_map.std() > 1e-3
    np.testing.assert_allclose(onnx_map, torch_map, atol=1e-4)
