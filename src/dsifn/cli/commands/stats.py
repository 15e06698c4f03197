"""``dsifn stats``: per-band mean and std of a dataset, for a training config's normalisation."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from dsifn.cli.options import finite_float

NAME = "stats"
HELP = "per-band mean and std of a dataset's images (both dates), for the model's normalization"


def _bands(text: str) -> tuple[int, ...] | tuple[str, ...]:
    from dsifn.bands import parse_bands
    from dsifn.errors import ConfigError

    try:
        return parse_bands(text, "--bands")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _folders(text: str) -> tuple[str, str, str]:
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 3 or not all(parts):
        raise argparse.ArgumentTypeError(f"three folder names T1,T2,MASK expected: {text!r}")
    return parts[0], parts[1], parts[2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``stats``'s options."""
    from typing import get_args

    from dsifn.data.config import Layout

    parser.add_argument("--data", required=True, metavar="PATH", help="dataset folder")
    parser.add_argument("--split", default="train", help="split to measure [train]")
    parser.add_argument(
        "--layout", default="auto", choices=get_args(Layout), help="folder layout [auto]"
    )
    parser.add_argument(
        "--folders",
        type=_folders,
        metavar="T1,T2,MASK",
        help="folder names for the generic layout, e.g. before,after,labels",
    )
    parser.add_argument(
        "--bands",
        type=_bands,
        metavar="B,B,...",
        help="1-based bands to use, e.g. 4,3,2, or band files by name, e.g. B04,B03,B02 [all]",
    )
    parser.add_argument(
        "--radiometry",
        default="auto",
        choices=("auto", "dn", "reflectance"),
        help="read digital numbers as stored or converted to reflectance, as data.radiometry "
        "[auto: reflectance where the data says how and no --scale is given]",
    )
    parser.add_argument(
        "--scale",
        type=finite_float,
        help="value that maps to 1 (e.g. 10000 for digital numbers of reflectance) "
        "[by dtype: 255, 65535, reflectance as it is]",
    )
    parser.add_argument(
        "--max-images", type=int, metavar="N", help="use N pairs spread over the split [all]"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def format_yaml(mean: Sequence[float], std: Sequence[float]) -> str:
    """The ``model.normalization`` section of a training config holding ``mean`` and ``std``."""

    def values(numbers: Sequence[float]) -> str:
        return "[" + ", ".join(f"{n:.6f}" for n in numbers) + "]"

    return f"model:\n  normalization:\n    mean: {values(mean)}\n    std: {values(std)}"


def run(args: argparse.Namespace) -> int:
    """Detect the layout, measure, print the numbers and a YAML snippet."""
    from dsifn.data import OSCD_BANDS, DataConfig, compute_band_stats, resolve_layout
    from dsifn.data.dataset import settle_radiometry
    from dsifn.errors import InputError

    if args.max_images is not None and args.max_images < 1:
        raise InputError(f"--max-images must be at least 1; got {args.max_images}")
    if args.scale is not None and not args.scale > 0:
        raise InputError(f"--scale must be positive; got {args.scale}")
    config = DataConfig(
        root=args.data,
        layout=args.layout,
        folders=args.folders,
        bands=args.bands,
        radiometry=args.radiometry,
        scale=args.scale,
    )
    layout = resolve_layout(config)
    print(layout.describe())
    config = settle_radiometry(config, layout)
    values = "values scaled to [0, 1]"
    if config.radiometry == "reflectance":  # said, as training will read them so
        rule = config.scaling_rule()
        then = "" if rule.rule == "dtype" else f", then {rule.describe()}"
        values = f"values as reflectance (data.radiometry=reflectance{then})"
    files = layout.split(args.split)
    count = len(files.samples)
    used = count if args.max_images is None else min(count, args.max_images)
    mean, std = compute_band_stats(
        config, args.split, args.max_images, layout=layout, progress=not args.no_progress
    )
    print(f"split {args.split}: {used} of {count} pairs, both dates, {values}")
    print(f"{'band':>4}  {'mean':>10}  {'std':>10}")
    bands: tuple[int | str, ...] = args.bands or tuple(range(1, len(mean) + 1))
    if args.bands is None and layout.name == "oscd":
        bands = OSCD_BANDS
    for band, m, s in zip(bands, mean, std, strict=True):
        print(f"{band:>4}  {m:>10.6f}  {s:>10.6f}")
    images = values.removeprefix("values ").split(" (")[0]
    print(f"paste into a training config (normalization of the images {images}):")
    print(format_yaml(mean, std))
    return 0
