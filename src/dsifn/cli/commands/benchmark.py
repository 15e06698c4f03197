"""``dsifn benchmark``: the baseline, the fast path and the deployment runtimes side by side."""

from __future__ import annotations

import argparse
from typing import get_args

from dsifn.benchmark.config import Mode
from dsifn.cli.options import (
    add_device_options,
    add_overwrite_option,
    comma_separated,
    finite_float,
)

NAME = "benchmark"
HELP = "time training steps, inference and scene prediction: eager fp32 baseline vs the fast path"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``benchmark``'s options."""
    add_device_options(parser)
    parser.add_argument("--size", type=int, default=256, help="image (and tile) side [256]")
    parser.add_argument(
        "--batch", type=int, default=None, help="training pairs per step [16 on CUDA, 2 on CPU]"
    )
    parser.add_argument(
        "--infer-batch", type=int, default=None, help="inference pairs per call [2 x --batch]"
    )
    parser.add_argument("--mode", default="all", choices=get_args(Mode), help="what to time [all]")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round [5]")
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed steps first; compilation happens here [2]"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating baseline/fast rounds; median [3]"
    )
    compile_group = parser.add_mutually_exclusive_group()
    compile_group.add_argument(
        "--compile",
        dest="compile",
        action="store_true",
        default=None,
        help="torch.compile the fast path, training included [default: inference on CUDA]",
    )
    compile_group.add_argument(
        "--no-compile", dest="compile", action="store_false", help="never torch.compile"
    )
    parser.add_argument(
        "--peak-tflops",
        type=finite_float,
        default=None,
        help="device peak for the fast path's precision",
    )
    parser.add_argument(
        "--scene-size", type=int, default=2048, help="side of the generated scene [2048]"
    )
    parser.add_argument(
        "--accuracy-pairs",
        type=int,
        default=8,
        help="synthetic pairs comparing fast and fp32 outputs; 0 skips [8]",
    )
    parser.add_argument(
        "--checkpoint", default=None, help="benchmark this checkpoint [a random DSIFN]"
    )
    parser.add_argument(
        "--runtimes",
        type=comma_separated,
        default=("eager", "fast"),
        help="inference paths side by side, comma-separated: eager (the baseline), fast, "
        "openvino, openvino-int8, onnxruntime, onnxruntime-int8 [eager,fast]",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="dataset: calibrates the int8 runtimes [synthetic tiles] and, with --checkpoint, "
        "gives each runtime's F1 on its test split",
    )
    parser.add_argument(
        "--calibration-pairs", type=int, default=16, help="tiles calibrating int8 runtimes [16]"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs [0]")
    parser.add_argument("--json", default=None, metavar="OUT", help="also write the report here")
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    """Measure, print the table, write the JSON report."""
    import json

    from dsifn.benchmark import BenchmarkConfig, format_report, run_benchmark
    from dsifn.io.atomic import atomic_path, check_output_path

    config = BenchmarkConfig(
        device=args.device,
        size=args.size,
        batch=args.batch,
        infer_batch=args.infer_batch,
        mode=args.mode,
        steps=args.steps,
        warmup=args.warmup,
        rounds=args.rounds,
        precision=args.precision,
        compile=args.compile,
        peak_tflops=args.peak_tflops,
        scene_size=args.scene_size,
        accuracy_pairs=args.accuracy_pairs,
        checkpoint=args.checkpoint,
        runtimes=args.runtimes,
        data=args.data,
        calibration_pairs=args.calibration_pairs,
        seed=args.seed,
    )
    if args.json is not None:
        check_output_path(args.json, overwrite=args.overwrite)  # fail before the long run
    report = run_benchmark(config)
    print(format_report(report))
    if args.json is not None:
        with atomic_path(args.json, overwrite=args.overwrite) as tmp:
            tmp.write_text(json.dumps(report.to_dict(), indent=2, default=str) + "\n")
        print(f"report written to {args.json}")
    return 0
