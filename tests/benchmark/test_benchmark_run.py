"""The benchmark end to end through ``dsifn benchmark``, at a tiny size.

Speed is never asserted: only that every field is there, finite and consistent.
"""

from __future__ import annotations

import json
import math

import torch

from dsifn.cli.main import main
from dsifn.flops import forward_flops
from dsifn.models import DSIFN

CASE_FIELDS = (
    "seconds_per_step",
    "pairs_per_second",
    "megapixels_per_second",
    "warmup_seconds",
)


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
