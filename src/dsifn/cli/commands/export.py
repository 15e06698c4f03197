"""``dsifn export``: write a dsifn checkpoint in a deployment format (ONNX)."""

from __future__ import annotations

import argparse

from dsifn.cli.options import add_overwrite_option

NAME = "export"
HELP = "export a dsifn checkpoint to ONNX (needs the onnx extra)"

FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``export``'s options."""
    parser.add_argument("--checkpoint", required=True, help="dsifn checkpoint (.pt) to export")
    parser.add_argument("--format", default="onnx", choices=FORMATS, help="output format [onnx]")
    parser.add_argument("-o", "--output", required=True, help="file to write, e.g. model.onnx")
    parser.add_argument("--opset", type=int, default=18, help="ONNX opset version, >= 18 [18]")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip running the exported graph in onnxruntime against PyTorch",
    )
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    """Export and say what the graph takes and returns."""
    from dsifn._optional import require
    from dsifn.interop.onnx import OUTPUT_NAMES, export_onnx
    from dsifn.io.atomic import check_output_path
    from dsifn.io.checkpoint import load_checkpoint

    # Everything that can be refused is, before the checkpoint is read and the graph traced.
    check_output_path(args.output, overwrite=args.overwrite)
    require("onnx", "onnx", "dsifn export")
    if not args.no_check:
        require("onnxruntime", "onnx", "dsifn export's check (--no-check skips it)")
    model = load_checkpoint(args.checkpoint)
    export_onnx(
        model, args.output, opset=args.opset, overwrite=args.overwrite, check=not args.no_check
    )
    size = model.config.input_size
    sides = f"{size}x{size} only" if size else "any multiple of 16 (OnnxRunner pads others)"
    print(
        f"wrote {args.output}: inputs t1, t2 (B, {model.config.in_channels}, H, W) normalised, "
        f"H, W {sides}; outputs {', '.join(OUTPUT_NAMES)} (probabilities, finest first)"
    )
    return 0
