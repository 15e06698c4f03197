"""OpenVINO export (dsifn export --format openvino), OpenVINORunner, and every runtime end to end.

The end-to-end tests run ``dsifn predict`` and ``dsifn evaluate`` through torch, onnxruntime
and OpenVINO on the same generated scene and dataset and compare what they write.
"""

from __future__ import annotations

import errno
import filecmp
import hashlib
import json
import os
import shutil
import sys
from typing import get_args

import numpy as np
import pytest
import rasterio
import torch

pytest.importorskip("openvino")

import openvino as ov

from dsifn.cli.main import build_parser, main
from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.errors import ConfigError, InputError, WeightsError
from dsifn.inference.loading import RUNTIMES, Runtime, load_runner, runtime_for
from dsifn.interop.openvino import (
    WEIGHTS_DIGEST,
    OpenVINORunner,
    export_openvino,
    performance_config,
    read_info,
)
from dsifn.io import atomic
from dsifn.models import DSIFN
from dsifn.models.checkpoint import load_checkpoint
from fixtures.rasters import write_geotiff


def _torch_probabilities(model, t1, t2):
    with torch.no_grad():
        return [torch.sigmoid(o).numpy() for o in model(torch.from_numpy(t1), torch.from_numpy(t2))]


@pytest.fixture(scope="module")
def fp32_runner(openvino_file):
    return OpenVINORunner(openvino_file, device="cpu", precision="fp32")


@pytest.mark.parametrize("shape", [(2, 3, 64, 32), (1, 3, 40, 36)])
def test_ir_matches_pytorch_at_several_sizes(checkpoint, fp32_runner, shape):
    # 64x32 in a batch of 2 proves the dynamic axes; 40x36 goes through the runner's padding.
    model = checkpoint[0]
    rng = np.random.default_rng(sum(shape))
    t1, t2 = (rng.normal(size=shape).astype(np.float32) for _ in "ab")
    got = fp32_runner.run_all(t1, t2)
    for expected, out in zip(_torch_probabilities(model, t1, t2), got, strict=True):
        assert out.shape == expected.shape
        assert expected.std() > 1e-3
        np.testing.assert_allclose(out, expected, atol=1e-4, rtol=0)


def test_metadata_carries_the_contract_and_threshold(checkpoint, openvino_file, fp32_runner):
    model, ckpt = checkpoint
    weights = openvino_file.with_suffix(".bin")
    assert weights.stat().st_size > 50e6  # fp32 weights, not fp16
    info = read_info(openvino_file)
    assert info["format"] == "dsifn-openvino" and info["precision"] == "fp32"
    assert info[WEIGHTS_DIGEST] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert info["threshold"] == 0.4 and "quantization" not in info
    saved = load_checkpoint(ckpt)
    assert (
        info[CONTRACT_KEY] == InputContract.from_meta(saved.checkpoint_meta, saved.config).to_dict()
    )
    # The metadata is OpenVINO's own runtime info, readable without dsifn.
    raw = ov.Core().read_model(str(openvino_file)).get_rt_info(["dsifn"]).astype(str)
    assert json.loads(raw)[CONTRACT_KEY]["threshold"] == 0.4
    runner = fp32_runner
    assert runner.contract == InputContract.from_dict(info[CONTRACT_KEY])
    assert runner.threshold == 0.4 and runner.tile_size is None and runner.in_channels == 3
    assert runner.normalization == model.config.input_normalization
    assert "openvino, CPU, fp32" in runner.describe()
    with pytest.raises(InputError, match="bands"):
        runner(np.zeros((1, 4, 32, 32), np.float32), np.zeros((1, 4, 32, 32), np.float32))


def test_performance_settings_are_configurable(openvino_file):
    assert performance_config("CPU", "fp32") == {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    settings = performance_config(
        "CPU", "bf16", hint="throughput", threads=2, streams=2, extra={"ENABLE_CPU_PINNING": "NO"}
    )
    assert settings == {
        "PERFORMANCE_HINT": "THROUGHPUT",
        "INFERENCE_NUM_THREADS": "2",
        "NUM_STREAMS": "2",
        "INFERENCE_PRECISION_HINT": "bf16",
        "ENABLE_CPU_PINNING": "NO",
    }
    for bad in ({"hint": "fast"}, {"threads": 0}, {"streams": 0}, {"precision": "fp16"}):
        with pytest.raises(ConfigError):
            performance_config("CPU", **bad)
    runner = OpenVINORunner(openvino_file, device="cpu", precision="fp32", threads=1)
    assert int(runner.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    with pytest.raises(ConfigError, match="unknown device 'cuda'"):
        OpenVINORunner(openvino_file, device="cuda")


def test_existing_outputs_and_foreign_files_are_refused(
    checkpoint, openvino_file, tmp_path, capsys
):
    ckpt = str(checkpoint[1])
    before = openvino_file.read_bytes()
    assert main(["export", "--checkpoint", ckpt, "-o", str(openvino_file)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert openvino_file.read_bytes() == before
    # A .bin of the same name is an output too.
    (tmp_path / "other.bin").write_bytes(b"kept")
    assert main(["export", "--checkpoint", ckpt, "-o", str(tmp_path / "other.xml")]) == 2
    assert "other.bin exists" in capsys.readouterr().err
    argv = ["export", "--checkpoint", ckpt, "--format", "openvino", "-o", str(tmp_path / "m.onnx")]
    assert main(argv) == 2
    assert "writes an .xml file" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.bin"]
    # An IR that dsifn did not write, and an .xml without its .bin.
    x = ov.opset13.parameter([1, 3, 16, 16], ov.Type.f32, name="t1")
    ov.save_model(ov.Model([ov.opset13.relu(x)], [x]), str(tmp_path / "plain.xml"))
    with pytest.raises(WeightsError, match="not exported by dsifn"):
        OpenVINORunner(tmp_path / "plain.xml", device="cpu")
    (tmp_path / "plain.bin").unlink(missing_ok=True)
    (tmp_path / "lonely.xml").write_text(openvino_file.read_text())
    with pytest.raises(WeightsError, match="not a loadable OpenVINO IR"):
        OpenVINORunner(tmp_path / "lonely.xml", device="cpu")


@pytest.fixture(scope="module")
def other_export(tmp_path_factory):
    """An IR of another model (other weights), exported beside nothing else."""
    path = tmp_path_factory.mktemp("other") / "other.xml"
    return export_openvino(DSIFN(variant="pytorch"), path, meta={"threshold": 0.4}, check=False)


def _pair(folder, name, xml, weights):
    """``folder/name.xml`` and ``.bin``: hard links to ``xml`` and ``weights`` (no copying)."""
    folder.mkdir(exist_ok=True)
    os.link(xml, folder / f"{name}.xml")
    os.link(weights, folder / f"{name}.bin")
    return folder / f"{name}.xml"


def _refused_by_predict(path, folder, capsys):
    """``dsifn predict`` with the IR ``path``: one line on stderr, exit 2; the line."""
    t1, t2 = _scene(folder)
    argv = ["predict", "--checkpoint", str(path), "--before", str(t1), "--after", str(t2)]
    assert main([*argv, "--out", str(folder / "change.tif"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (folder / "change.tif").exists()
    return err


def test_bins_swapped_between_two_exports_are_refused(
    openvino_file, other_export, tmp_path, capsys
):
    mine, theirs = openvino_file, other_export
    a = _pair(tmp_path / "a", "model", mine, theirs.with_suffix(".bin"))
    b = _pair(tmp_path / "b", "model", theirs, mine.with_suffix(".bin"))
    for path in (a, b):
        with pytest.raises(WeightsError, match=r"is not the \.bin that .* was written with"):
            OpenVINORunner(path, device="cpu")
        with pytest.raises(WeightsError, match="export the model again"):
            read_info(path)
    err = _refused_by_predict(a, tmp_path, capsys)
    assert f"{a.with_suffix('.bin')} is not the .bin that {a} was written with" in err
    # Each export loads with its own .bin.
    assert OpenVINORunner(theirs, device="cpu").threshold == 0.4


def test_a_failed_replacement_puts_the_old_pair_back(openvino_file, tmp_path, monkeypatch):
    path = _pair(tmp_path / "out", "model", openvino_file, openvino_file.with_suffix(".bin"))
    move = atomic.move_into_place

    def fail_at_the_xml(tmp, final):
        if final.suffix == ".xml":  # the .bin has been renamed into place; the .xml is not
            raise OSError(errno.EIO, "simulated failure between the two renames", str(final))
        move(tmp, final)

    monkeypatch.setattr(atomic, "move_into_place", fail_at_the_xml)
    with pytest.raises(OSError, match="simulated failure"):
        export_openvino(DSIFN(variant="pytorch"), path, overwrite=True, check=False)
    monkeypatch.undo()
    # The old pair, byte for byte: the new .bin was moved out again.
    assert filecmp.cmp(path.with_suffix(".bin"), openvino_file.with_suffix(".bin"), shallow=False)
    assert filecmp.cmp(path, openvino_file, shallow=False)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.bin", "model.xml"]
    OpenVINORunner(path, device="cpu")  # loads


def test_a_crash_between_the_renames_is_refused_rather_than_mixed(openvino_file, tmp_path, capsys):
    # What a crash (power loss, SIGKILL) between the two renames leaves: the new .bin beside
    # the old .xml. A reader is refused, never served the mixed pair.
    path = _pair(tmp_path / "out", "model", openvino_file, openvino_file.with_suffix(".bin"))
    other = export_openvino(DSIFN(variant="pytorch"), tmp_path / "new.xml", check=False)
    path.with_suffix(".bin").unlink()  # a hard link to the shared file: do not write through it
    shutil.copyfile(other.with_suffix(".bin"), path.with_suffix(".bin"))
    with pytest.raises(WeightsError, match="replacing it did not finish; export the model again"):
        OpenVINORunner(path, device="cpu")
    assert "export the model again" in _refused_by_predict(path, tmp_path, capsys)


def test_an_ir_written_before_the_digest_loads_unchecked(openvino_file, tmp_path):
    model = ov.Core().read_model(str(openvino_file))
    info = json.loads(model.get_rt_info(["dsifn"]).astype(str))
    del info[WEIGHTS_DIGEST]
    model.set_rt_info(json.dumps(info), ["dsifn"])
    ov.save_model(model, str(tmp_path / "old.xml"), compress_to_fp16=False)
    runner = OpenVINORunner(tmp_path / "old.xml", device="cpu")
    assert WEIGHTS_DIGEST not in runner.info and runner.threshold == 0.4


def test_runtime_choices_come_from_the_runtime_table():
    assert get_args(Runtime) == ("auto", *RUNTIMES)
    assert [runtime_for(f"m.{s}") for s in ("xml", "onnx", "pt")] == [
        "openvino",
        "onnxruntime",
        "torch",
    ]
    parser = build_parser()
    for runtime in RUNTIMES:
        argv = ["--checkpoint", "m.xml", "--runtime", runtime]
        assert parser.parse_args(["predict", *argv]).runtime == runtime
        assert parser.parse_args(["evaluate", *argv, "--data", "d"]).runtime == runtime


@pytest.mark.parametrize("module", ["openvino", "nncf"])
def test_a_missing_extra_is_one_line_naming_pip(checkpoint, tmp_path, capsys, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import MODULE` now raises ImportError
    argv = ["export", "--checkpoint", str(checkpoint[1]), "-o", str(tmp_path / "m.xml")]
    if module == "nncf":
        argv += ["--int8", "--calibration", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"needs the openvino extra ({module} is not installed)" in err
    assert "pip install 'dsifn[openvino]'" in err
    assert not list(tmp_path.iterdir())
    if module == "openvino":
        (tmp_path / "m.xml").write_text("<net/>")
        with pytest.raises(ConfigError, match=r"pip install 'dsifn\[openvino\]'"):
            load_runner(tmp_path / "m.xml")


def _scene(folder):
    """A 40x36 uint8 pair with a nodata (0) corner, as GeoTIFFs: 2x2 tiles of 32."""
    rng = np.random.default_rng(5)
    pair = []
    for name in ("t1", "t2"):
        data = rng.integers(1, 255, (3, 40, 36), dtype=np.uint8)
        data[:, :6, :6] = 0
        pair.append(write_geotiff(folder / f"{name}.tif", data, nodata=0))
    return pair


def test_predict_through_each_runtime_matches_torch(checkpoint, onnx_file, openvino_file, tmp_path):
    t1, t2 = _scene(tmp_path)
    common = ["--before", str(t1), "--after", str(t2), "--quiet", "--device", "cpu"]
    common += ["--precision", "fp32", "--tile-size", "32", "--overlap", "8"]
    common += ["--mode", "both", "--batch-size", "2"]
    models = {"torch": checkpoint[1], "onnxruntime": onnx_file, "openvino": openvino_file}
    maps, tags = {}, {}
    for runtime, model in models.items():  # the runtime chosen by the file's suffix
        out = tmp_path / runtime / "change.tif"
        argv = ["predict", "--checkpoint", str(model), "--out", str(out), *common]
        argv += ["--quicklook", str(out.with_suffix(".png"))]
        assert main(argv) == 0
        assert out.with_suffix(".png").stat().st_size > 0
        with rasterio.open(out) as src:
            maps[runtime], tags[runtime] = src.read(), src.tags()
    assert "openvino" in tags["openvino"]["model"] and "onnxruntime" in tags["onnxruntime"]["model"]
    reference = maps.pop("torch")
    assert reference[0].std() > 1e-3 and (reference[0] == -1).sum() == 36  # the nodata corner
    for runtime, found in maps.items():
        np.testing.assert_allclose(found[0], reference[0], atol=1e-4, err_msg=runtime)
        flips = found[1] != reference[1]
        assert flips.mean() < 0.002, runtime  # the mask may differ only where p is at 0.4
    drop = {"model", "checkpoint"}
    same = [{k: v for k, v in t.items() if k not in drop} for t in tags.values()]
    assert same[0] == same[1] == same[2]


def test_evaluate_through_each_runtime_scores_alike(checkpoint, onnx_file, openvino_file, levir):
    models = {"torch": checkpoint[1], "onnxruntime": onnx_file, "openvino": openvino_file}
    scores = {}
    for runtime, model in models.items():
        out = levir.parent / f"eval-{runtime}"
        argv = ["evaluate", "--checkpoint", str(model), "--data", str(levir), "--split", "test"]
        argv += ["--device", "cpu", "--precision", "fp32", "--out", str(out)]
        assert main(argv) == 0
        scores[runtime] = json.loads((out / "metrics.json").read_text())
    reference = scores.pop("torch")
    for runtime, found in scores.items():
        assert found["threshold"] == reference["threshold"] == 0.4, runtime
        for name in ("f1", "precision", "recall"):
            assert found["scores"][name] == pytest.approx(reference["scores"][name], abs=1e-3)
