"""Command-line options shared by several commands, defined once."""

from __future__ import annotations

import argparse
import math
from typing import Any, get_args

from dsifn.devices import Precision, Runtime
from dsifn.errors import ConfigError
from dsifn.models.dsifn import Variant

__all__ = [
    "add_device_options",
    "add_model_file_options",
    "add_model_options",
    "add_offset_option",
    "add_overwrite_option",
    "add_progress_option",
    "comma_separated",
    "date_offsets",
    "finite_float",
    "model_options_from_args",
]


def comma_separated(text: str) -> tuple[str, ...]:
    """An argparse ``type``: ``"eager,openvino-int8"`` -> ``("eager", "openvino-int8")``."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


def finite_float(text: str) -> float:
    """An argparse ``type``: a number, refusing NaN and infinity (``float`` takes both).

    Raises:
        argparse.ArgumentTypeError: If ``text`` is not a finite number.
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` and ``--precision``."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N [auto]"
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=get_args(Precision),
        help="numeric precision; auto picks bf16 where the hardware has it, else fp32 [auto]",
    )


def add_model_file_options(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint`` (a checkpoint or an exported model) and ``--runtime``."""
    parser.add_argument(
        "--checkpoint", required=True, help="dsifn checkpoint (.pt) or exported model (.onnx, .xml)"
    )
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=get_args(Runtime),
        help="how to run the model [auto: onnxruntime for .onnx, openvino for .xml, else torch]",
    )


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: allow replacing existing outputs."""
    parser.add_argument(
        "--overwrite", action="store_true", help="replace outputs that already exist"
    )


def date_offsets(text: str) -> float | tuple[float | None, float | None]:
    """An argparse ``type``: one offset for both dates (``-1000``), or ``T1,T2`` (``,-1000``).

    An empty side keeps that date's own (what its files state).
    """
    parts = text.split(",")
    if len(parts) == 1:
        return finite_float(text)
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(f"one offset, or two as T1,T2; got {text!r}")
    first, second = (finite_float(p) if p.strip() else None for p in parts)
    return first, second


def add_offset_option(parser: Any, *, per_date: bool = False) -> None:
    """``--offset``: digital numbers added first, replacing what the files state."""
    dates = " (T1,T2: one per date, an empty side the files' own, e.g. ,-1000)" if per_date else ""
    parser.add_argument(
        "--offset",
        type=date_offsets if per_date else finite_float,
        help="add this to every band's digital numbers first, replacing the offset the files "
        f"state{dates}: -1000 for Sentinel-2 of processing baseline 04.00 or later that states "
        "none [the files' own: tags, STAC raster:bands, SAFE metadata]",
    )


def add_progress_option(parser: argparse.ArgumentParser) -> None:
    """``--progress``: how progress is shown (every command has it; ``--quiet`` means none)."""
    from dsifn.progress import PROGRESS_MODES

    parser.add_argument(
        "--progress",
        default="auto",
        choices=PROGRESS_MODES,
        help="auto: a bar on a terminal, a line per tenth in a log; json: one JSON object a "
        "line on standard error, for programs; none [auto]",
    )


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options that build a :class:`dsifn.DSIFNConfig`."""
    group = parser.add_argument_group("model")
    group.add_argument("--in-channels", type=int, default=3, help="bands per image [3]")
    group.add_argument(
        "--separate-encoders", action="store_true", help="one VGG16 encoder per date, not shared"
    )
    group.add_argument(
        "--trainable-encoder",
        action="store_true",
        help="train the VGG16 encoder (frozen by default)",
    )
    group.add_argument(
        "--stage1-attention", action="store_true", help="channel attention on stage 1 too"
    )
    group.add_argument(
        "--variant", choices=get_args(Variant), help="DSIFN's official file to follow [pytorch]"
    )


# The options of add_model_options that only DSIFN has.
_DSIFN_ONLY = {
    "separate_encoders": "--separate-encoders",
    "trainable_encoder": "--trainable-encoder",
    "stage1_attention": "--stage1-attention",
    "variant": "--variant",
}


def model_options_from_args(args: argparse.Namespace, *, dsifn: bool = True) -> dict[str, Any]:
    """Keyword arguments of the network's configuration from :func:`add_model_options`.

    Args:
        args: The parsed options.
        dsifn: Whether the network is DSIFN; another takes ``in_channels`` only.

    Raises:
        ConfigError: If a DSIFN-only option is given for another network.
    """
    if not dsifn:
        given = [flag for dest, flag in _DSIFN_ONLY.items() if getattr(args, dest)]
        if given:
            raise ConfigError(f"{', '.join(given)}: DSIFN's option(s), not this network's")
        return {"in_channels": args.in_channels}
    return {
        "in_channels": args.in_channels,
        "shared_encoder": not args.separate_encoders,
        "freeze_encoder": not args.trainable_encoder,
        "stage1_channel_attention": args.stage1_attention,
        "variant": args.variant or "pytorch",
    }
