"""``dsifn export``: write a dsifn model for deployment: ONNX or OpenVINO IR, fp32 or int8."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsifn.cli.flags import set_param
from dsifn.cli.options import add_overwrite_option, finite_float

if TYPE_CHECKING:
    from dsifn.interop.quantize import Calibration

NAME = "export"
HELP = (
    "export a dsifn checkpoint to ONNX or OpenVINO IR, in fp32 or int8 "
    "(needs the onnx or openvino extra)"
)

FORMATS = ("onnx", "openvino")
# The library's defaults, for the help text only (the parser imports no export code); a flag
# not given is not passed on, and a test keeps these equal to the library's.
DEFAULT_OPSET = 18
DEFAULT_PAIRS = 64
DEFAULT_MAX_F1_DROP = 1.0
# The packages each format needs, named before any work: (module, extra, what needs it).
_NEEDS = {
    "onnx": [("onnx", "onnx", "dsifn export --format onnx")],
    "openvino": [("openvino", "openvino", "dsifn export --format openvino")],
}
_NEEDS_INT8 = {
    "onnx": [("onnxruntime", "onnx", "dsifn export --int8")],
    "openvino": [("nncf", "openvino", "dsifn export --int8")],
}
_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino"}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``export``'s options."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="dsifn checkpoint (.pt) to export; with --int8 also an fp32 export of the format",
    )
    parser.add_argument(
        "--format", choices=FORMATS, help="output format [by --out: openvino for .xml, else onnx]"
    )
    parser.add_argument(
        "-o", "--out", required=True, help="file to write: model.onnx, or model.xml (+ model.bin)"
    )
    parser.add_argument("--opset", type=int, help=f"ONNX opset version, >= 18 [{DEFAULT_OPSET}]")
    parser.add_argument(
        "--no-check",
        action="store_true",
        help="skip running the exported fp32 model against PyTorch",
    )
    int8 = parser.add_argument_group("int8 (post-training quantisation)")
    int8.add_argument(
        "--int8",
        action="store_true",
        help="quantise: NNCF for openvino, static QDQ with per-channel weights for onnx",
    )
    int8.add_argument("--calibration", metavar="DATA", help="dataset folder to calibrate on")
    split = int8.add_argument(
        "--calibration-split",
        metavar="S",
        help="split to read, of 2 or more pairs [val, else train]",
    )
    set_param(split, "calibration.split")
    int8.add_argument(
        "--calibration-pairs",
        type=_positive_int,
        metavar="N",
        help="tiles at the model's tile size that calibrate; a quarter as many more, cut from "
        f"other pairs held out from calibration, measure the accuracy cost [{DEFAULT_PAIRS}]",
    )
    int8.add_argument(
        "--max-f1-drop",
        type=finite_float,
        metavar="X",
        help="refuse the int8 model when its F1 on the held-out tiles is more than X points "
        f"below fp32's [{DEFAULT_MAX_F1_DROP:g}]",
    )
    add_overwrite_option(parser)


def _format(args: argparse.Namespace) -> str:
    """The format asked for, else the one ``--out`` says; refuses options that do not fit."""
    from dsifn.errors import ConfigError

    xml = Path(args.out).suffix.lower() == ".xml"
    fmt: str = args.format or ("openvino" if xml else "onnx")
    if fmt == "onnx" and xml:
        raise ConfigError(f"--format onnx writes an .onnx file; got --out {args.out}")
    if fmt == "openvino" and not xml:
        raise ConfigError(f"--format openvino writes an .xml file (and its .bin); got {args.out}")
    if fmt != "onnx" and args.opset is not None:
        raise ConfigError("--opset applies to --format onnx only")
    given = [
        flag
        for flag, value in (
            ("--calibration", args.calibration),
            ("--calibration-split", args.calibration_split),
            ("--calibration-pairs", args.calibration_pairs),
            ("--max-f1-drop", args.max_f1_drop),
        )
        if value is not None
    ]
    if args.int8 and args.calibration is None:
        raise ConfigError("--int8 needs --calibration DATA: a dataset folder to calibrate on")
    if given and not args.int8:
        raise ConfigError(f"{', '.join(given)} apply to --int8 only")
    return fmt


def _calibration(args: argparse.Namespace) -> Calibration:
    from dsifn.interop.quantize import Calibration

    given = {
        "split": args.calibration_split,
        "pairs": args.calibration_pairs,
        "max_f1_drop": args.max_f1_drop,
    }
    return Calibration(data=args.calibration, **{k: v for k, v in given.items() if v is not None})


def _write(args: argparse.Namespace, fmt: str) -> dict[str, Any]:
    """Export (or quantise an fp32 export); returns the written model's metadata."""
    from dsifn.errors import ConfigError
    from dsifn.inference.loading import runtime_for
    from dsifn.interop import onnx, openvino
    from dsifn.models.checkpoint import load_checkpoint

    source = runtime_for(args.checkpoint)
    if source != "torch":
        if not args.int8 or source != _RUNTIME[fmt]:
            raise ConfigError(
                f"{args.checkpoint} is an exported model: --checkpoint takes a dsifn checkpoint, "
                f"or with --int8 an fp32 export of --format {fmt}"
            )
        quantize = onnx.quantize_onnx if fmt == "onnx" else openvino.quantize_openvino
        calibration = _calibration(args)
        quantize(args.checkpoint, args.out, calibration=calibration, overwrite=args.overwrite)
    else:
        model = load_checkpoint(args.checkpoint)
        options: dict[str, Any] = {
            "overwrite": args.overwrite,
            "check": not args.no_check,
            "int8": args.int8,
            "calibration": _calibration(args) if args.int8 else None,
        }
        if fmt == "onnx":
            if args.opset is not None:
                options["opset"] = args.opset
            onnx.export_onnx(model, args.out, **options)
        else:
            openvino.export_openvino(model, args.out, **options)
    return onnx.read_info(args.out) if fmt == "onnx" else openvino.read_info(args.out)


def run(args: argparse.Namespace) -> int:
    """Export and say what the model takes and returns (and what int8 cost)."""
    from dsifn._optional import require
    from dsifn.interop.quantize import QuantizationCost
    from dsifn.io.atomic import check_output_path

    fmt = _format(args)
    # Everything that can be refused is, before the checkpoint is read and the graph traced.
    check_output_path(args.out, overwrite=args.overwrite)
    if fmt == "openvino":
        check_output_path(Path(args.out).with_suffix(".bin"), overwrite=args.overwrite)
    needs = _NEEDS[fmt] + (_NEEDS_INT8[fmt] if args.int8 else [])
    if fmt == "onnx" and not args.no_check:
        needs.append(("onnxruntime", "onnx", "dsifn export's check (--no-check skips it)"))
    for module, extra, what in needs:
        require(module, extra, what)
    info = _write(args, fmt)
    if "quantization" in info:
        print(QuantizationCost.from_dict(info["quantization"]).describe())
    size = info.get("tile_size")
    sides = f"{size}x{size} only" if size else "any multiple of 16 (dsifn's runners pad others)"
    files = args.out
    if fmt == "openvino":
        files += f" and {Path(args.out).with_suffix('.bin')}"
    print(
        f"wrote {files} ({info.get('precision', 'fp32')}): inputs t1, t2 "
        f"(B, {info['in_channels']}, H, W) normalised, H, W {sides}; outputs "
        f"{', '.join(info['outputs'])} (probabilities, finest first)"
    )
    return 0
