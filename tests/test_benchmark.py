"""The benchmark machinery: the command end to end at a tiny size, FLOP counts, accuracy.

Speed is never asserted: only that every field is there, finite and consistent.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dsifn.benchmark import (
    BenchmarkConfig,
    compare_accuracy,
    device_peak_tflops,
    training_step_flops,
)
from dsifn.cli.main import main
from dsifn.errors import ConfigError
from dsifn.flops import forward_flops
from dsifn.inference.fast import optimize_for_inference
from dsifn.models import DSIFN

CASE_FIELDS = (
    "seconds_per_step",
    "pairs_per_second",
    "megapixels_per_second",
    "warmup_seconds",
)


@pytest.fixture(autouse=True)
def _one_thread():
    # These tests run beside others on 2 shared cores, where two OpenMP threads per process
    # spend most of their time waiting for each other; one thread is faster there.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_benchmark_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "report.json"
    argv = [
        "benchmark", "--device", "cpu", "--size", "16", "--batch", "2", "--infer-batch", "1",
        "--steps", "1", "--warmup", "0", "--rounds", "1", "--scene-size", "40",
        "--accuracy-pairs", "1", "--precision", "fp32", "--json", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for text in ("training speed-up", "inference speed-up", "scene pixels/s", "accuracy cost"):
        assert text in printed
    report = json.loads(out.read_text())
    cases = {(c["task"], c["path"]): c for c in report["cases"]}
    assert set(cases) == {
        ("train", "baseline"),
        ("train", "fast"),
        ("infer", "baseline"),
        ("infer", "fast"),
        ("scene", "raw runner"),
        ("scene", "pipeline only"),
        ("scene", "predict_scene"),
    }
    for case in cases.values():
        for name in CASE_FIELDS:
            assert math.isfinite(case[name]) and case[name] >= 0, (case["task"], name)
        assert case["seconds_per_step"] > 0
        assert case["peak_memory_bytes"] > 0  # peak RSS on the CPU
    for task in ("train", "infer"):
        for path in ("baseline", "fast"):
            case = cases[(task, path)]
            assert case["flops_per_step"] > 0
            assert math.isclose(
                case["tflops"], case["flops_per_step"] / case["seconds_per_step"] / 1e12
            )
            assert case["peak_fraction"] is None  # no CPU peak in the table
    # Forward FLOPs of one 16 px pair, and a training step counted on a real step.
    assert cases[("infer", "baseline")]["flops_per_step"] == forward_flops(DSIFN(), 16)
    assert cases[("train", "fast")]["flops_per_step"] > cases[("infer", "fast")]["flops_per_step"]
    assert cases[("scene", "predict_scene")]["extra"]["tiles"] > 1
    # Without the model's cost the pipeline runs faster than with it.
    pipeline = cases[("scene", "pipeline only")]["megapixels_per_second"]
    assert pipeline > cases[("scene", "predict_scene")]["megapixels_per_second"]
    for name in (
        "train",
        "infer",
        "scene_vs_raw_pixels",
        "scene_tiles_vs_raw",
        "pipeline_vs_raw_pixels",
    ):
        assert math.isfinite(report["ratios"][name]) and report["ratios"][name] > 0
    accuracy = report["accuracy"]
    assert accuracy["precision"] == "fp32"  # as asked: a CPU with native bf16 would pick bf16
    assert accuracy["max_probability_difference"] < 1e-4
    assert accuracy["mask_agreement"] == 1.0
    assert report["environment"]["torch"] == torch.__version__


def test_benchmark_command_refuses_to_overwrite_its_report(tmp_path, capsys):
    out = tmp_path / "report.json"
    out.write_text("keep me")
    assert main(["benchmark", "--device", "cpu", "--size", "16", "--json", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err
    assert out.read_text() == "keep me"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--size", "8"], "size must be at least 16"),
        (["--steps", "0"], "steps and rounds"),
        (["--scene-size", "16", "--size", "32"], "scene_size"),
        (["--precision", "fp16"], "CUDA"),
        (["--size", "16", "--batch", "1", "--mode", "train"], "batch of at least 2"),
    ],
)
def test_benchmark_command_bad_options(argv, message, capsys):
    assert main(["benchmark", "--device", "cpu", "--accuracy-pairs", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_config_checks_mode():
    with pytest.raises(ConfigError, match="mode"):
        BenchmarkConfig(mode="everything")  # type: ignore[arg-type]


def _encoder_flops(model: DSIFN, size: int) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.encoder(torch.zeros(2, 3, size, size))  # both dates go through one trunk
    return int(counter.get_total_flops())


@pytest.mark.parametrize("frozen", [False, True])
def test_training_step_flops_against_the_forward(frozen):
    torch.manual_seed(0)
    model = DSIFN(freeze_encoder=frozen).train()
    size = 32
    t1, t2 = torch.randn(2, 1, 3, size, size).unbind(0)
    target = (torch.rand(1, 1, size, size) > 0.5).float()
    step = training_step_flops(model, (t1, t2, target))
    forward = forward_flops(model, size)
    assert model.training  # left as it was
    assert all(p.grad is None for p in model.parameters())
    if not frozen:
        # Backward costs two forwards (input and weight gradients): a step is about 3x.
        assert step / forward == pytest.approx(3.0, rel=0.02)
    else:
        # A frozen trunk gets no backward: forward + twice the decoder's forward.
        decoder = forward - _encoder_flops(model, size)
        assert step / (forward + 2 * decoder) == pytest.approx(1.0, rel=0.03)


def test_device_peak_table(monkeypatch):
    assert device_peak_tflops(torch.device("cpu"), "fp32") is None
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert device_peak_tflops(cuda, "bf16") == pytest.approx(989.4)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert device_peak_tflops(cuda, "fp32") == pytest.approx(494.7)  # convolutions run TF32
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert device_peak_tflops(cuda, "fp32") == pytest.approx(66.9)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert device_peak_tflops(cuda, "bf16") == pytest.approx(756.5)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert device_peak_tflops(cuda, "bf16") == pytest.approx(989.4)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    assert device_peak_tflops(cuda, "bf16") is None


def test_compare_accuracy_sees_a_difference_and_its_absence():
    torch.manual_seed(0)
    model = DSIFN().eval()
    fast, _ = optimize_for_inference(model, device="cpu", precision="fp32")
    same = compare_accuracy(model, fast, pairs=2, size=32)
    assert same.max_probability_difference < 1e-5
    assert same.mask_agreement == 1.0
    assert same.f1_fast == same.f1_baseline

    def shifted(t1, t2):  # a "fast path" that is wrong by a known amount on every logit
        out = fast(t1, t2)
        return type(out)(*(o + 2.0 for o in out))

    # Batched, the last batch filled up with repeats that do not count.
    batched = compare_accuracy(model, fast, pairs=3, size=32, batch=2)
    assert batched.pairs == 3 and batched.mask_agreement == 1.0
    assert batched.max_probability_difference < 1e-5

    off = compare_accuracy(model, shifted, pairs=2, size=32)
    assert off.max_logit_difference == pytest.approx(2.0, abs=1e-4)
    assert off.max_probability_difference > 0.1
    assert off.mask_agreement < 1.0


def test_compare_accuracy_reports_nan_outputs():
    torch.manual_seed(0)
    model = DSIFN().eval()
    fast, _ = optimize_for_inference(model, device="cpu", precision="fp32")

    def broken(t1, t2):  # a compiled path that went wrong on one output only
        out = fast(t1, t2)
        return out._replace(stride4=torch.full_like(out.stride4, float("nan")))

    report = compare_accuracy(model, broken, pairs=1, size=32)
    assert math.isnan(report.max_logit_difference)
