"""``dsifn convert``: turn foreign DSIFN weights into a dsifn checkpoint."""

from __future__ import annotations

import argparse

from dsifn.cli.options import add_overwrite_option

NAME = "convert"
HELP = "convert the authors' Keras .h5 model into a dsifn checkpoint"

FORMATS = ("keras",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``convert``'s options."""
    parser.add_argument(
        "format",
        choices=FORMATS,
        help="format of the input: keras (a Keras 2.2.4 or Keras 3 legacy model.save .h5)",
    )
    parser.add_argument("source", help="the file to convert, e.g. best_model.h5")
    parser.add_argument("-o", "--out", required=True, help="dsifn checkpoint to write (.pt)")
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    """Convert and report what was written."""
    from dsifn.interop.keras_h5 import convert_keras_h5

    model = convert_keras_h5(args.source, args.out, overwrite=args.overwrite)
    cfg = model.config
    print(
        f"wrote {args.out}: DSIFN ({cfg.variant} variant), {cfg.input_size}x{cfg.input_size} "
        f"tiles, {cfg.in_channels} bands, Caffe BGR preprocessing"
    )
    for note in model.checkpoint_meta.get("conversion_notes", []):
        print(f"note: {note}")
    return 0
