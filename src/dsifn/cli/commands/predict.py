"""``dsifn predict``: change maps for scene pairs, tiled and georeferenced."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from dsifn.cli.options import add_device_options, add_overwrite_option, finite_float

NAME = "predict"
HELP = "predict the change map of a pair of scenes (GeoTIFF or PNG/JPEG), tile by tile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``predict``'s options."""
    parser.add_argument("--checkpoint", required=True, help="dsifn checkpoint (or .onnx model)")
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", "torch", "onnxruntime"),
        help="how to run the model [auto: onnxruntime for .onnx files, else torch]",
    )
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument(
        "--before",
        nargs="+",
        metavar="FILE",
        help="T1 image; several band files are stacked in the given order on the finest grid",
    )
    io.add_argument("--after", nargs="+", metavar="FILE", help="T2 image or band files, as T1")
    io.add_argument("--out", help="change map (.tif for rasters, .png for PNG/JPEG pairs)")
    io.add_argument("--before-dir", help="folder of T1 images, paired with --after-dir by name")
    io.add_argument("--after-dir", help="folder of T2 images")
    io.add_argument("--out-dir", help="folder for the change maps of --before-dir pairs")
    io.add_argument("--polygons", help="also write changed regions (.gpkg or .geojson)")
    io.add_argument(
        "--min-area",
        type=finite_float,
        default=0.0,
        help="drop polygons smaller than this, in CRS units squared (m² in UTM) [0]",
    )
    io.add_argument("--quicklook", help="also write a before | after | change PNG")
    out = parser.add_argument_group("change map")
    out.add_argument(
        "--mode",
        default="probability",
        choices=("probability", "mask", "both"),
        help="probability, binary mask, or both as bands 1 and 2 [probability]",
    )
    out.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "uint8"),
        help="float32 (nodata -1) or uint8 (probability x 254, nodata 255) [float32]",
    )
    out.add_argument(
        "--threshold",
        type=finite_float,
        help="change where probability > threshold [the model's recorded one, else 0.5]",
    )
    out.add_argument("--cog", action="store_true", help="write a Cloud-Optimized GeoTIFF")
    data = parser.add_argument_group(
        "input bands and values (each defaults to what the model recorded in training)"
    )
    data.add_argument(
        "--bands",
        help="bands of each image, in order: 1-based numbers (4,3,2) or band names that pick "
        "band files (B04,B03,B02)",
    )
    data.add_argument(
        "--scale",
        type=finite_float,
        help="divide raw values by this (e.g. 10000 for Sentinel-2 L1C)",
    )
    data.add_argument(
        "--stretch", help="per-band percentile stretch LOW,HIGH computed from both dates"
    )
    data.add_argument(
        "--align", action="store_true", help="resample T2 onto T1's grid instead of refusing"
    )
    tiles = parser.add_argument_group("tiling")
    tiles.add_argument(
        "--tile-size",
        type=int,
        help="tile side [the model's fixed size, or 512; 1024 with --attention scene]",
    )
    tiles.add_argument("--overlap", type=int, help="pixels shared by neighbouring tiles [tile/8]")
    tiles.add_argument(
        "--batch-size", type=int, default=1, help="tiles per forward pass (more on a GPU) [1]"
    )
    tiles.add_argument(
        "--tta", action="store_true", help="average the 8 flips/rotations of each tile (8x slower)"
    )
    tiles.add_argument(
        "--attention",
        choices=("tile", "scene"),
        default="tile",
        help="pool channel attention per tile (fast), or over the whole scene so that the map "
        "equals the network run on the scene in one piece (about 5 passes, 1024-px tiles "
        "with 288-px margins) [tile]",
    )
    add_device_options(parser)
    add_overwrite_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _numbers(text: str | None, name: str, kind: type) -> tuple[Any, ...] | None:
    from dsifn.errors import ConfigError

    if text is None:
        return None
    try:
        return tuple(kind(part) for part in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"{name} takes comma-separated numbers; got {text!r}") from exc


def _pairs(before_dir: Path, after_dir: Path) -> tuple[list[str], list[str], list[str]]:
    from dsifn.errors import InputError
    from dsifn.io.images import IMAGE_SUFFIXES

    for folder in (before_dir, after_dir):
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder")

    def names(folder: Path) -> set[str]:
        return {p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}

    first, second = names(before_dir), names(after_dir)
    return sorted(first & second), sorted(first - second), sorted(second - first)


def run(args: argparse.Namespace) -> int:
    """Check every output, load the model once, predict each pair."""
    from dsifn.errors import ConfigError, InputError
    from dsifn.inference.runner import load_runner
    from dsifn.inference.scene import SceneOptions, predict_scene
    from dsifn.io.atomic import check_output_path
    from dsifn.io.images import PILLOW_SUFFIXES, parse_bands

    stretch = _numbers(args.stretch, "--stretch", float)
    if stretch is not None and len(stretch) != 2:
        raise ConfigError(f"--stretch takes LOW,HIGH; got {args.stretch!r}")
    bands = None if args.bands is None else parse_bands(args.bands, "--bands")
    options: dict[str, Any] = {
        "tile_size": args.tile_size,
        "overlap": args.overlap,
        "batch_size": args.batch_size,
        "tta": args.tta,
        "attention": args.attention,
        "mode": args.mode,
        "dtype": args.dtype,
        "threshold": args.threshold,
        "cog": args.cog,
        "bands": bands,
        "scale": args.scale,
        "stretch": stretch,
        "align": args.align,
        "min_area": args.min_area,
        "overwrite": args.overwrite,
        "progress": not args.quiet,
    }
    SceneOptions(**options)  # refuse bad values before loading anything

    jobs: list[tuple[Any, Any, Path]] = []
    single = args.before is not None or args.after is not None or args.out is not None
    folders = args.before_dir is not None or args.after_dir is not None or args.out_dir is not None
    if single == folders:
        raise InputError(
            "give either --before, --after and --out, or --before-dir, --after-dir and --out-dir"
        )
    if single:
        if args.before is None or args.after is None or args.out is None:
            raise InputError("--before, --after and --out are all needed")
        jobs.append((args.before, args.after, Path(args.out)))
        options["polygons"] = args.polygons
        options["quicklook"] = args.quicklook
    else:
        if args.before_dir is None or args.after_dir is None or args.out_dir is None:
            raise InputError("--before-dir, --after-dir and --out-dir are all needed")
        if args.polygons or args.quicklook:
            raise InputError("--polygons and --quicklook name one file: use them with --before")
        before_dir, after_dir, out_dir = (
            Path(args.before_dir),
            Path(args.after_dir),
            Path(args.out_dir),
        )
        matched, only_before, only_after = _pairs(before_dir, after_dir)
        if only_before:
            print(
                f"dsifn predict: no T2 match in {after_dir} for: {', '.join(only_before)}",
                file=sys.stderr,
            )
        if only_after:
            print(
                f"dsifn predict: no T1 match in {before_dir} for: {', '.join(only_after)}",
                file=sys.stderr,
            )
        if not matched:
            raise InputError(f"no file names in {before_dir} match names in {after_dir}")
        for name in matched:
            plain = Path(name).suffix.lower() in PILLOW_SUFFIXES
            out = out_dir / (Path(name).stem + (".png" if plain else ".tif"))
            jobs.append((before_dir / name, after_dir / name, out))
    for *_, out in jobs:
        check_output_path(out, overwrite=args.overwrite)
    for extra in (args.polygons, args.quicklook):
        if single and extra is not None:
            check_output_path(extra, overwrite=args.overwrite)
    if single and args.polygons is not None:
        from dsifn.inference.polygons import check_polygon_output

        check_polygon_output(args.polygons)

    runner = load_runner(
        args.checkpoint, runtime=args.runtime, device=args.device, precision=args.precision
    )
    for before, after, out in jobs:
        result = predict_scene(runner, before, after, out, **options)
        tiles = f"{result.tiles} tile" + ("" if result.tiles == 1 else "s")
        line = f"wrote {result.output} ({tiles}, threshold {result.threshold:g})"
        if result.polygons is not None:
            line += f"; {result.polygon_count} polygons in {result.polygons}"
        if result.quicklook is not None:
            line += f"; quicklook {result.quicklook}"
        print(line)
    return 0
