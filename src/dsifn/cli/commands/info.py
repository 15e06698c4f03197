"""``dsifn info``: size and cost of a network's configuration (DSIFN or a baseline)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dsifn.cli.options import add_model_options, model_options_from_args
from dsifn.models.registry import MODEL_NAMES

if TYPE_CHECKING:
    from dsifn.models.registry import ChangeNetwork

NAME = "info"
HELP = "print parameter counts and forward FLOPs of a network (DSIFN or a baseline) for a size"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``info``'s options."""
    parser.add_argument("--size", type=int, default=512, help="input side in pixels [512]")
    parser.add_argument(
        "--model", default="dsifn", choices=MODEL_NAMES, help="the network (model.name) [dsifn]"
    )
    add_model_options(parser)


def run(args: argparse.Namespace) -> int:
    """Build the model on the CPU, count, print."""
    from dsifn.errors import InputError
    from dsifn.flops import count_parameters, forward_flops
    from dsifn.models import build_network, model_entry

    if args.size < 16:
        raise InputError(f"--size must be at least 16; got {args.size}")
    entry = model_entry(args.model)
    options = model_options_from_args(args, dsifn=args.model == "dsifn")
    if options.get("variant") == "keras":
        options["input_size"] = args.size
    model = build_network(entry.config(**options), pretrained=False)
    total, trainable = count_parameters(model)
    flops = forward_flops(model, args.size, bands=args.in_channels)
    print(_title(model))
    print(f"parameters:           {total:>14,d}  ({total / 1e6:.2f} M)")
    print(f"trainable parameters: {trainable:>14,d}  ({trainable / 1e6:.2f} M)")
    print(
        f"forward FLOPs, one {args.size}x{args.size} pair: {flops / 1e9:.1f} GFLOP "
        f"({flops / 2e9:.1f} G multiply-accumulates)"
    )
    return 0


def _title(model: ChangeNetwork) -> str:
    """What the network is, in one line."""
    from dsifn.models import DSIFN
    from dsifn.models.registry import entry_of

    if isinstance(model, DSIFN):
        cfg = model.config
        return (
            f"DSIFN ({cfg.variant} variant), {cfg.in_channels} bands, "
            f"{'shared' if cfg.shared_encoder else 'separate'} "
            f"{'frozen' if cfg.freeze_encoder else 'trainable'} VGG16 encoder"
        )
    entry = entry_of(model)
    return f"{entry.title} ({entry.reference}), {model.config.in_channels} bands"
