"""``dsifn info``: size and cost of a DSIFN configuration."""

from __future__ import annotations

import argparse

from dsifn.cli.options import add_model_options, model_options_from_args

NAME = "info"
HELP = "print parameter counts and forward FLOPs of a DSIFN for an input size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``info``'s options."""
    parser.add_argument("--size", type=int, default=512, help="input side in pixels [512]")
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    """Build the model on the CPU, count, print."""
    from dsifn.errors import InputError
    from dsifn.flops import count_parameters, forward_flops
    from dsifn.models import DSIFN

    if args.size < 16:
        raise InputError(f"--size must be at least 16; got {args.size}")
    options = model_options_from_args(args)
    if args.variant == "keras":
        options["input_size"] = args.size
    model = DSIFN(**options)
    total, trainable = count_parameters(model)
    flops = forward_flops(model, args.size, bands=args.in_channels)
    cfg = model.config
    print(
        f"DSIFN ({cfg.variant} variant), {cfg.in_channels} bands, "
        f"{'shared' if cfg.shared_encoder else 'separate'} "
        f"{'frozen' if cfg.freeze_encoder else 'trainable'} VGG16 encoder"
    )
    print(f"parameters:           {total:>14,d}  ({total / 1e6:.2f} M)")
    print(f"trainable parameters: {trainable:>14,d}  ({trainable / 1e6:.2f} M)")
    print(
        f"forward FLOPs, one {args.size}x{args.size} pair: {flops / 1e9:.1f} GFLOP "
        f"({flops / 2e9:.1f} G multiply-accumulates)"
    )
    return 0
