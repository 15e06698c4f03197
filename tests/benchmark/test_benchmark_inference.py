"""The inference case: every named runner in the list is timed alike, the first is the baseline."""

from __future__ import annotations

import pytest
import torch

from dsifn.benchmark import BenchmarkConfig
from dsifn.benchmark.inference import (
    NamedRunner,
    inference_ratios,
    measure_inference,
    torch_path,
)
from dsifn.flops import forward_flops
from dsifn.inference.runner import TorchRunner
from dsifn.models import DSIFN
from dsifn.testing import StandInRunner


def test_each_named_runner_is_timed_on_the_same_batch():
    torch.manual_seed(0)
    network = DSIFN().eval()
    runners = [
        NamedRunner("baseline", StandInRunner(3, "constant"), "the reference", "fp32"),
        NamedRunner(
            "fast", StandInRunner(3, "constant"), "the fast one", "bf16", cudnn_benchmark=True
        ),
        NamedRunner("openvino-int8", StandInRunner(3, "constant"), "another runtime", "int8"),
    ]
    config = BenchmarkConfig(size=16, warmup=1, rounds=2, steps=3)
    cpu = torch.device("cpu")
    cases = measure_inference(runners, network=network, config=config, device=cpu, batch=2)
    assert [(c.task, c.path, c.description) for c in cases] == [
        ("infer", "baseline", "the reference"),
        ("infer", "fast", "the fast one"),
        ("infer", "openvino-int8", "another runtime"),
    ]
    for named in runners:
        # 1 warm-up, 2 rounds of 3 steps, 1 call for the peak memory.
        assert named.runner.shapes == [(2, 3, 16, 16)] * 8  # type: ignore[attr-defined]
    flops = forward_flops(network, 16, batch=2)
    assert all(c.flops_per_step == flops and c.batch == 2 for c in cases)
    ratios = inference_ratios(cases)
    assert set(ratios) == {"infer", "infer_openvino-int8"}
    assert ratios["infer"] == cases[1].pairs_per_second / cases[0].pairs_per_second
    assert ratios["infer_openvino-int8"] == cases[2].pairs_per_second / cases[0].pairs_per_second


def test_runner_names_must_differ():
    runners = [NamedRunner("fast", StandInRunner(3, "constant"), "", "fp32")] * 2
    with pytest.raises(ValueError, match="different names"):
        measure_inference(
            runners, network=DSIFN(), config=BenchmarkConfig(size=16),
            device=torch.device("cpu"), batch=1,
        )  # fmt: skip


def test_torch_paths_say_what_they_run():
    model = DSIFN()
    eager = torch_path("baseline", TorchRunner(model, device="cpu", precision="fp32", fast=False))
    assert (eager.name, eager.description, eager.precision) == (
        "baseline",
        "eager fp32 NCHW",
        "fp32",
    )
    assert not eager.cudnn_benchmark  # the baseline keeps cuDNN's default algorithms
    fast = torch_path("fast", TorchRunner(model, device="cpu", precision="fp32"))
    assert fast.description == "channels_last, fp32, BN folded"
    assert fast.cudnn_benchmark
