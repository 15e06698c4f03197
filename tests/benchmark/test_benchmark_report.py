"""The text report: one line per case, FLOPs of the baseline, labelled ratios, notes."""

from __future__ import annotations

from dsifn.benchmark import BenchmarkReport, format_report
from dsifn.benchmark.timing import case_result

ENVIRONMENT = {
    "dsifn": "0.0",
    "torch": "2.x",
    "cpu": "Some CPU",
    "device": "cpu",
    "threads": 2,
    "date_utc": "2000-01-01 00:00 UTC",
}


def _case(path: str, seconds: float, flops: int | None = 10**9):
    return case_result(
        "infer", path, f"{path} does this", batch=2, size=16, times=[seconds], warmup=0.5,
        memory=2**30, flops=flops, peak=None,
    )  # fmt: skip


def test_report_lines():
    cases = [_case("baseline", 2.0), _case("fast", 1.0), _case("openvino", 0.5)]
    report = BenchmarkReport(
        config={},
        environment=ENVIRONMENT,
        cases=cases,
        ratios={"infer": 2.0, "infer_openvino": 4.0},
        accuracy=None,
        notes=["something to know"],
    )
    lines = format_report(report).splitlines()
    assert lines[0].startswith("dsifn 0.0, torch 2.x, Some CPU (cpu, 2 CPU threads)")
    assert lines[1].split()[:3] == ["task", "path", "batch"]
    for line, case in zip(lines[2:5], cases, strict=True):
        assert line.split()[:4] == ["infer", case.path, "2", f"{case.seconds_per_step:.4g}"]
        assert line.split()[-6:-3] == ["-%", "1.00G", "0.5s"]  # no peak known; 1 GiB; warm-up
        assert line.endswith(f"  {case.path} does this")
    assert lines[5:] == [
        "counted FLOPs per infer step of 2 pairs: 1.0 G (0.5 G/pair)",  # the baseline's only
        "inference speed-up, fast / baseline: 2.00x",
        "inference speed-up, openvino / baseline: 4.00x",
        "note: something to know",
    ]


def test_report_gives_s_per_pair_and_each_runtimes_f1():
    cases = [_case("baseline", 2.0), _case("openvino-int8", 0.5)]
    report = BenchmarkReport(
        config={},
        environment=ENVIRONMENT,
        cases=cases,
        ratios={"infer_openvino-int8": 4.0},
        accuracy=None,
        notes=[],
        agreement={
            "baseline": {"f1": 0.8563, "f1_drop": 0.0},
            "openvino-int8": {"f1": 0.8568, "f1_drop": -0.05},
        },
    )
    lines = format_report(report).splitlines()
    assert lines[2].split()[4] == "1" and lines[3].split()[4] == "0.25"  # s/pair = s/step / 2
    assert lines[-2:] == [
        "F1 on the test split, baseline: 85.63 % (+0.00 points)",
        "F1 on the test split, openvino-int8: 85.68 % (+0.05 points)",
    ]
