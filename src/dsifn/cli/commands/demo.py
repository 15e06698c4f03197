"""``dsifn demo``: synthetic data, training, evaluation and a baseline, offline, on a CPU."""

from __future__ import annotations

import argparse

from dsifn.cli.options import add_overwrite_option, finite_float

NAME = "demo"
HELP = (
    "generate synthetic change data, train DSIFN on it within a time budget, evaluate it "
    "against a pixel-difference baseline and write an HTML report"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``demo``'s options."""
    parser.add_argument("--out", default="dsifn-demo", help="demo folder [dsifn-demo]")
    parser.add_argument(
        "--minutes", type=finite_float, default=10.0, help="time budget of the whole demo [10]"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N [auto]"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of data and training [0]")
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    from dsifn.demo import DemoConfig, run_demo

    config = DemoConfig(minutes=args.minutes, seed=args.seed, device=args.device)
    run_demo(args.out, config, overwrite=args.overwrite)
    return 0
