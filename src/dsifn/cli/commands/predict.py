"""``dsifn predict``: change maps for scene pairs, tiled and georeferenced."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dsifn.cli.options import (
    add_device_options,
    add_model_file_options,
    add_offset_option,
    add_overwrite_option,
    finite_float,
)

if TYPE_CHECKING:
    from dsifn.inference.folders import FolderPairs
    from dsifn.inference.options import SceneOptions, SceneResult

NAME = "predict"
HELP = "predict the change map of a pair of scenes (GeoTIFF or PNG/JPEG), tile by tile"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``predict``'s options."""
    add_model_file_options(parser)
    _add_io_options(parser)
    _add_map_options(parser)
    _add_band_options(parser)
    _add_tiling_options(parser)
    add_device_options(parser)
    add_overwrite_option(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _add_io_options(parser: argparse.ArgumentParser) -> None:
    """Inputs (one pair or two folders) and outputs."""
    io = parser.add_argument_group("inputs and outputs")
    io.add_argument(
        "--before",
        nargs="+",
        metavar="FILE",
        help="T1 image; several band files are stacked in the given order on the finest grid; "
        "with band names (the model's, or --bands B04,B03,B02) also a folder of band files, a "
        "SAFE product or a STAC item (JSON file or URL)",
    )
    io.add_argument(
        "--after", nargs="+", metavar="FILE", help="T2 image, band files, folder or item, as T1"
    )
    io.add_argument("--out", help="change map (.tif for rasters, .png for PNG/JPEG pairs)")
    io.add_argument("--before-dir", help="folder of T1 images, paired with --after-dir by name")
    io.add_argument("--after-dir", help="folder of T2 images")
    io.add_argument("--out-dir", help="folder for the change maps of --before-dir pairs")
    io.add_argument(
        "--skip-existing",
        action="store_true",
        help="folders: skip pairs whose complete map exists (resume a run that stopped)",
    )
    io.add_argument(
        "--num-splits",
        type=int,
        default=1,
        help="folders: cut the pairs (sorted by name) into N disjoint shares, one per job [1]",
    )
    io.add_argument(
        "--split-index",
        type=int,
        default=0,
        help="folders: the share this job predicts, 0..N-1 (an array job's index) [0]",
    )
    io.add_argument("--polygons", help="also write changed regions (.gpkg or .geojson)")
    io.add_argument(
        "--min-area",
        type=finite_float,
        default=0.0,
        help="drop polygons smaller than this, in CRS units squared (m² in UTM) [0]",
    )
    io.add_argument("--quicklook", help="also write a before | after | change PNG")


def _add_map_options(parser: argparse.ArgumentParser) -> None:
    """How the change map is written."""
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


def _add_band_options(parser: argparse.ArgumentParser) -> None:
    """How pixels become model input."""
    data = parser.add_argument_group(
        "input bands and values (each defaults to what the model recorded in training)"
    )
    data.add_argument(
        "--bands",
        help="bands of each image, in order: 1-based numbers (4,3,2) or band names that pick "
        "band files or STAC assets (B04,B03,B02 or red,green,blue)",
    )
    add_offset_option(data, per_date=True)
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


def _add_tiling_options(parser: argparse.ArgumentParser) -> None:
    """How the scene is cut into tiles."""
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


def _numbers(text: str | None, name: str, kind: type) -> tuple[Any, ...] | None:
    from dsifn.errors import ConfigError

    if text is None:
        return None
    try:
        return tuple(kind(part) for part in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"{name} takes comma-separated numbers; got {text!r}") from exc


def _scene_options(args: argparse.Namespace) -> SceneOptions:
    """The one :class:`~dsifn.inference.options.SceneOptions` of the command, checked."""
    from dsifn.bands import parse_bands
    from dsifn.errors import ConfigError
    from dsifn.inference.scene import SceneOptions

    stretch = _numbers(args.stretch, "--stretch", float)
    if stretch is not None and len(stretch) != 2:
        raise ConfigError(f"--stretch takes LOW,HIGH; got {args.stretch!r}")
    return SceneOptions(
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        tta=args.tta,
        attention=args.attention,
        mode=args.mode,
        dtype=args.dtype,
        threshold=args.threshold,
        cog=args.cog,
        bands=None if args.bands is None else parse_bands(args.bands, "--bands"),
        scale=args.scale,
        offset=args.offset,
        stretch=stretch,
        align=args.align,
        min_area=args.min_area,
        overwrite=args.overwrite,
        progress=not args.quiet,
        runtime=args.runtime,
        device=args.device,
        precision=args.precision,
        polygons=args.polygons,
        quicklook=args.quicklook,
    )


def _one_pair(args: argparse.Namespace) -> bool:
    """Whether the command names one pair (--before ...) rather than two folders."""
    from dsifn.errors import InputError

    single = args.before is not None or args.after is not None or args.out is not None
    folders = args.before_dir is not None or args.after_dir is not None or args.out_dir is not None
    if single == folders:
        raise InputError(
            "give either --before, --after and --out, or --before-dir, --after-dir and --out-dir"
        )
    if single and (args.before is None or args.after is None or args.out is None):
        raise InputError("--before, --after and --out are all needed")
    if folders and (args.before_dir is None or args.after_dir is None or args.out_dir is None):
        raise InputError("--before-dir, --after-dir and --out-dir are all needed")
    if folders and (args.polygons or args.quicklook):
        raise InputError("--polygons and --quicklook name one file: use them with --before")
    if single and (args.skip_existing or args.num_splits != 1 or args.split_index != 0):
        raise InputError("--skip-existing, --num-splits and --split-index are for folders")
    if single and _world_size() > 1:
        raise InputError(
            "torchrun shares the pairs of --before-dir and --after-dir among its processes; "
            "predict one pair (--before) in one process"
        )
    return single


def _world_size() -> int:
    from dsifn.distributed import this_process

    return this_process().world_size


def _line(result: SceneResult) -> str:
    """What ``dsifn predict`` prints for a pair it wrote."""
    tiles = f"{result.tiles} tile" + ("" if result.tiles == 1 else "s")
    line = f"wrote {result.output} ({tiles}, threshold {result.threshold:g})"
    if result.polygons is not None:
        line += f"; {result.polygon_count} polygons in {result.polygons}"
    if result.quicklook is not None:
        line += f"; quicklook {result.quicklook}"
    return line


def _unmatched(pairs: FolderPairs) -> None:
    """Name the files of either folder that have no partner in the other."""
    if pairs.only_before:
        print(
            f"dsifn predict: no T2 match in {pairs.after_dir} for: {', '.join(pairs.only_before)}",
            file=sys.stderr,
        )
    if pairs.only_after:
        print(
            f"dsifn predict: no T1 match in {pairs.before_dir} for: {', '.join(pairs.only_after)}",
            file=sys.stderr,
        )


def _predict_pair(args: argparse.Namespace, options: SceneOptions) -> None:
    from dsifn.inference.scene import predict_scene

    print(_line(predict_scene(args.checkpoint, args.before, args.after, Path(args.out), options)))


def _predict_folders(args: argparse.Namespace, options: SceneOptions) -> None:
    from dsifn.inference.folders import Share, predict_folders

    done = predict_folders(
        args.checkpoint,
        Path(args.before_dir),
        Path(args.after_dir),
        Path(args.out_dir),
        options,
        share=Share(args.num_splits, args.split_index),
        skip_existing=args.skip_existing,
        on_pairs=_unmatched,
        on_result=lambda result: print(_line(result)),
    )
    if done.skipped and done.rank == 0:
        count = len(done.skipped)
        print(f"skipped {count} pair{'' if count == 1 else 's'} whose complete map exists")
    if done.world_size > 1 and done.rank == 0:
        pairs, tiles = len(done.results), done.tiles
        print(
            f"predicted {pairs} pair{'' if pairs == 1 else 's'} on {done.world_size} processes "
            f"({tiles} tile{'' if tiles == 1 else 's'})"
        )


def run(args: argparse.Namespace) -> int:
    """Check every output, load the model once, predict each pair."""
    options = _scene_options(args)
    if _one_pair(args):
        _predict_pair(args, options)
    else:
        _predict_folders(args, options)
    return 0
