"""The files of a scene prediction, written from its working raster of probabilities.

The change map is a GeoTIFF (or Cloud-Optimized GeoTIFF) for rasters and a PNG for plain images;
it holds the probability, the binary mask or both as bands 1 and 2, as float32 (nodata
:data:`FLOAT_NODATA`) or uint8 (probability x 254, nodata :data:`UINT8_NODATA`), and records
how it was made in its metadata tags (:func:`scene_tags`). Polygons
(:mod:`dsifn.inference.polygons`) and the quicklook (:mod:`dsifn.inference.quicklook`) are made
from the same working raster (:func:`write_outputs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsifn._version import __version__
from dsifn.contract import InputContract, is_change
from dsifn.errors import ConfigError
from dsifn.inference.options import SceneOptions, ScenePlan
from dsifn.io.images import SourceName
from dsifn.io.pairs import ImagePair
from dsifn.io.pictures import write_png
from dsifn.scaling import Scaling

__all__ = [
    "FLOAT_NODATA",
    "UINT8_NODATA",
    "check_map_format",
    "complete_map",
    "encode",
    "output_nodata",
    "scene_tags",
    "write_geotiff",
    "write_map_png",
    "write_outputs",
]

# Nodata of float32 outputs: outside [0, 1], so no probability is mistaken for it.
FLOAT_NODATA = -1.0
# Nodata of uint8 outputs; probabilities are stored as round(p * 254) to keep 255 free.
UINT8_NODATA = 255
UINT8_PROBABILITY_SCALE = 254
# Rows written per block of the output pass: a multiple of the output's 256-pixel blocks.
OUTPUT_ROWS = 256
# Band descriptions of the GeoTIFF, by mode.
BAND_DESCRIPTIONS = {
    "probability": ("change_probability",),
    "mask": ("change_mask",),
    "both": ("change_probability", "change_mask"),
}


def output_nodata(dtype: str) -> float:
    """The nodata value of a change map of ``dtype``."""
    return UINT8_NODATA if dtype == "uint8" else FLOAT_NODATA


def check_map_format(out: Path, *, plain: bool, opts: SceneOptions) -> None:
    """Refuse, before any work, a change map its inputs and options cannot give.

    Args:
        out: The change map's path.
        plain: Whether the inputs are plain images (PNG/JPEG/BMP), which give a PNG map.
        opts: The scene's options.

    Raises:
        ConfigError: If the name's extension or the options do not fit the map's format.
    """
    if plain and opts.cog:
        raise ConfigError("a Cloud-Optimized GeoTIFF needs georeferenced rasters, not plain images")
    if plain and out.suffix.lower() != ".png":
        raise ConfigError(f"plain images give a PNG map; name the output .png, not {out}")
    if plain and opts.mode == "both":
        raise ConfigError('a PNG holds one map: use `mode="probability"` or `mode="mask"`')
    if not plain and out.suffix.lower() not in (".tif", ".tiff"):
        raise ConfigError(f"the change map is a GeoTIFF; name the output .tif, not {out}")


def scene_tags(
    *,
    model: str,
    checkpoint: str,
    before: Sequence[SourceName],
    after: Sequence[SourceName],
    contract: InputContract,
    scaling: Scaling,
    tile: int,
    overlap: int,
    opts: SceneOptions,
    radiometry: str = "digital numbers as stored",
) -> dict[str, str]:
    """The metadata a change map records: the model, its inputs and how they were read."""
    bands = contract.bands
    return {
        "dsifn_version": __version__,
        "model": model,
        "checkpoint": checkpoint,
        "before": " ".join(str(p) for p in before),
        "after": " ".join(str(p) for p in after),
        "bands": "all" if bands is None else ",".join(map(str, bands)),
        "radiometry": radiometry,
        "scaling": scaling.description,
        "threshold": f"{contract.threshold:g}",
        "threshold_rule": contract.threshold_rule,
        "tile_size": str(tile),
        "overlap": str(overlap),
        "tta": str(opts.tta).lower(),
        "attention": opts.attention,
        "mode": opts.mode,
        "aligned": str(opts.align).lower(),
        "nodata": str(output_nodata(opts.dtype)),
    }


def encode(probability: np.ndarray, threshold: float, mode: str, dtype: str) -> np.ndarray:
    """(n, w) probabilities with NaN as nodata -> (bands, n, w) output values."""
    invalid = np.isnan(probability)
    bands = []
    if mode in ("probability", "both"):
        if dtype == "uint8":
            scaled = np.rint(np.nan_to_num(probability) * UINT8_PROBABILITY_SCALE)
            bands.append(np.where(invalid, UINT8_NODATA, scaled).astype(np.uint8))
        else:
            bands.append(np.where(invalid, FLOAT_NODATA, probability).astype(np.float32))
    if mode in ("mask", "both"):
        mask = is_change(probability, threshold).astype(dtype)
        bands.append(np.where(invalid, output_nodata(dtype), mask).astype(dtype))
    return np.stack(bands)


def _map_profile(src: Any, count: int, dtype: str) -> dict[str, Any]:
    # The input's grid (copied from the working raster), tiled and compressed.
    return {
        "driver": "GTiff",
        "width": src.width,
        "height": src.height,
        "count": count,
        "dtype": dtype,
        "crs": src.crs,
        "transform": src.transform,
        "nodata": output_nodata(dtype),
        "tiled": True,
        "blockxsize": 256,
        "blockysize": 256,
        "compress": "deflate",
        "num_threads": "ALL_CPUS",
        "predictor": 2 if dtype == "uint8" else 3,
        "BIGTIFF": "IF_SAFER",
    }


def write_geotiff(
    work: Path,
    out: Path,
    *,
    mode: str,
    dtype: str,
    threshold: float,
    cog: bool,
    tags: dict[str, str],
) -> None:
    """Write the change map of a working raster as a GeoTIFF, row block by row block.

    Args:
        work: The working raster (float32 probabilities, NaN = nodata).
        out: The GeoTIFF to write.
        mode: ``"probability"``, ``"mask"`` or ``"both"`` (bands 1 and 2).
        dtype: ``"float32"`` or ``"uint8"``.
        threshold: Decision threshold of the mask.
        cog: Write a Cloud-Optimized GeoTIFF (through a plain one beside it).
        tags: Metadata to record.
    """
    import rasterio

    descriptions = BAND_DESCRIPTIONS[mode]
    with rasterio.open(work) as src:
        target = out.with_name(out.name + ".gtiff") if cog else out
        with rasterio.open(target, "w", **_map_profile(src, len(descriptions), dtype)) as dst:
            for first in range(0, src.height, OUTPUT_ROWS):
                n = min(OUTPUT_ROWS, src.height - first)
                window = ((first, first + n), (0, src.width))
                dst.write(encode(src.read(1, window=window), threshold, mode, dtype), window=window)
            dst.update_tags(**tags)
            for i, text in enumerate(descriptions, start=1):
                dst.set_band_description(i, text)
    if cog:
        try:
            _copy_as_cog(target, out, mode)
        finally:
            target.unlink(missing_ok=True)


def _copy_as_cog(source: Path, out: Path, mode: str) -> None:
    import rasterio.shutil

    rasterio.shutil.copy(
        source,
        out,
        driver="COG",
        compress="deflate",
        predictor="YES",
        blocksize=256,
        overview_resampling="nearest" if mode != "probability" else "average",
        bigtiff="IF_SAFER",
    )


def complete_map(path: Path) -> bool:
    """Whether ``path`` is a change map dsifn finished writing (a resumed run skips its pair).

    Maps are written under a private name and renamed when complete, so a crash never leaves
    one at its place; this also refuses a file put there otherwise: a GeoTIFF must carry
    dsifn's metadata and read to its last row, a PNG must pass Pillow's integrity check.
    """
    if not path.is_file():
        return False
    try:
        if path.suffix.lower() == ".png":
            from PIL import Image

            with Image.open(path) as image:
                image.verify()
            return True
        import rasterio

        with rasterio.open(path) as src:
            last = ((src.height - 1, src.height), (0, src.width))
            src.read(window=last)
            return "dsifn_version" in src.tags()
    except Exception:  # any failure to read it means it is not a complete map
        return False


def write_map_png(work: Path, out: Path, *, mode: str, threshold: float) -> None:
    """Write the change map of a working raster as an 8-bit PNG.

    The probability is stored as round(p x 255), the mask as 0/255; pixels where either date
    has no data are transparent (alpha 0), as PNG inputs say "no data"
    (:func:`dsifn.io.pictures.write_png`).
    """
    import rasterio

    if mode == "both":
        raise ConfigError('a PNG holds one map: use `mode="probability"` or `mode="mask"`')
    with rasterio.open(work) as src:
        probability = src.read(1)
    if mode == "mask":
        pixels = np.where(is_change(probability, threshold), 255, 0).astype(np.uint8)
    else:
        pixels = np.rint(np.nan_to_num(probability) * 255).astype(np.uint8)
    write_png(out, pixels, valid=~np.isnan(probability), overwrite=True)


def write_outputs(
    work: Path,
    paths: Sequence[Path],
    pair: ImagePair,
    plan: ScenePlan,
    opts: SceneOptions,
) -> int | None:
    """Write the change map, then the polygons and quicklook asked for, from a working raster.

    Args:
        work: The working raster (float32 probabilities, NaN = nodata).
        paths: Where to write the map, then the polygons and the quicklook if asked for.
        pair: Both dates (for the quicklook).
        plan: The scene's plan: the map's format, threshold and metadata.
        opts: What was asked: mode, data type, COG, polygons, quicklook.

    Returns:
        The number of polygons written, or None when none were asked for.
    """
    threshold = plan.contract.threshold
    if plan.plain:
        write_map_png(work, paths[0], mode=opts.mode, threshold=threshold)
    else:
        write_geotiff(
            work,
            paths[0],
            mode=opts.mode,
            dtype=opts.dtype,
            threshold=threshold,
            cog=opts.cog,
            tags=plan.tags,
        )
    count = None
    if opts.polygons is not None:
        from dsifn.inference.polygons import write_polygons

        count = write_polygons(
            work, paths[1], threshold=threshold, min_area=opts.min_area, overwrite=True
        )
    if opts.quicklook is not None:
        from dsifn.inference.quicklook import write_quicklook

        write_quicklook(pair, work, paths[-1], threshold=threshold, overwrite=True)
    return count
