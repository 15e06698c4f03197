"""STAC items as one date: the model's bands picked from an item's assets, read over HTTP.

Most users find Sentinel-2 through a STAC catalogue (Earth Search, Planetary Computer, ...). An
item (a local JSON file, or an ``http(s)`` URL) is read with ``pystac`` (``pip install
dsifn[stac]``); each band the model takes is found among its assets by the asset's key or by
its bands' ``name`` / ``common_name`` (``B04``, ``red``: :func:`dsifn.bands.band_id`),
preferring the cloud-optimised GeoTIFF where a band comes in several formats. Assets are
read in windows straight from where they are (``/vsicurl/`` for HTTP, ``/vsis3/`` for S3), never
downloaded whole, and their ``raster:bands`` scale and offset say how digital numbers become
reflectance (:mod:`dsifn.io.radiometry`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

from dsifn.bands import band_id
from dsifn.errors import ConfigError, InputError
from dsifn.io.radiometry import BASELINE_04_DATE, Conversion, from_scale_offset, product_hint
from dsifn.io.raster_images import is_url, url_name

__all__ = ["ItemBands", "is_item", "item_bands"]


@dataclass(frozen=True)
class ItemBands:
    """The files of the bands asked for, in that order, and what the item states of them."""

    files: list[str | Path]  # GDAL names (/vsicurl/https://...) or local paths
    stated: list[Conversion | None]  # raster:bands scale and offset, per file
    hint: str | None  # why the item is a product of baseline 04.00 or later, or None


def is_item(text: str) -> bool:
    """Whether a date given as ``text`` is a STAC item rather than a raster.

    A local ``.json`` file, or an ``http(s)`` URL whose path ends in ``.json`` or has no
    suffix (``.../collections/sentinel-2-l2a/items/S2B_31UDQ_20230601_0_L2A``); a URL with
    another suffix (``.tif``) is a raster.
    """
    if is_url(text):
        suffix = PurePosixPath(urlparse(text).path).suffix.lower()
        return suffix in ("", ".json")
    return Path(text).suffix.lower() == ".json"


def item_bands(reference: str | Path, names: Sequence[str], what: str = "image") -> ItemBands:
    """The asset files of bands ``names`` (band ids) in a STAC item, in that order.

    Args:
        reference: The item: a local JSON file or an ``http(s)`` URL.
        names: Band ids (``B04``...), as the model's input contract records them.
        what: What to call this date in messages ("T1", "T2").

    Raises:
        ConfigError: If pystac is not installed.
        InputError: If the item cannot be read, or a band has no asset or several.
    """
    item = _read_item(str(reference), what)
    files: list[str | Path] = []
    stated: list[Conversion | None] = []
    for name in names:
        key, asset = _asset_of(item, name, f"{what}: the STAC item {reference}")
        files.append(_gdal_name(asset.get_absolute_href() or asset.href))
        stated.append(_raster_scale(asset.extra_fields, f"STAC raster:bands of {key}"))
    return ItemBands(files, stated, _item_hint(item))


def _read_item(reference: str, what: str) -> Any:
    try:
        import pystac
    except ImportError as exc:
        raise ConfigError(
            "reading a STAC item needs pystac: pip install 'dsifn[stac]' (or pystac)"
        ) from exc
    try:
        return pystac.Item.from_file(reference)
    except (OSError, ValueError, KeyError, TypeError, pystac.STACError) as exc:
        reason = getattr(exc, "reason", None) or exc
        detail = " ".join(str(reason).split()) or type(exc).__name__
        raise InputError(f"{what}: cannot read the STAC item {reference}: {detail}") from exc


def _bands_of(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """An asset's band descriptions: STAC 1.1 ``bands``, else ``eo:bands``."""
    bands = fields.get("bands") or fields.get("eo:bands") or []
    return [b for b in bands if isinstance(b, dict)]


def _band_ids(key: str, fields: dict[str, Any]) -> tuple[str | None, set[str]]:
    """The band id an asset's key names, and the ids its band descriptions name."""
    described = set()
    for band in _bands_of(fields):
        for value in (band.get("name"), band.get("common_name"), band.get("eo:common_name")):
            if isinstance(value, str) and band_id(value) is not None:
                described.add(str(band_id(value)))
    return band_id(key), described


def _asset_of(item: Any, name: str, where: str) -> tuple[str, Any]:
    """The asset (key, asset) holding band ``name``: by key first, then by its bands.

    Only single-band assets count (not ``visual``); a band in several formats is taken from
    the cloud-optimised GeoTIFF.
    """
    by_key, by_band = [], []
    for key, asset in item.assets.items():
        if len(_bands_of(asset.extra_fields)) > 1:
            continue
        named, described = _band_ids(key, asset.extra_fields)
        if named == name:
            by_key.append((key, asset))
        elif name in described:
            by_band.append((key, asset))
    found = by_key or by_band
    tiffs = [(k, a) for k, a in found if "tiff" in str(a.media_type or "").lower()]
    found = tiffs or found
    if len(found) == 1:
        return found[0]
    keys = ", ".join(k for k, _ in found) if found else ", ".join(item.assets)
    how = f"several assets of band {name}" if found else f"no asset of band {name}; its assets"
    raise InputError(f"{where} has {how}: {keys}")


def _gdal_name(href: str) -> str | Path:
    """How GDAL reads an asset: ``/vsicurl/`` over HTTP, ``/vsis3/`` from S3, else a path."""
    remote = url_name(href)
    if remote is not None:
        return remote
    if href.startswith("s3://"):
        return f"/vsis3/{href[len('s3://') :]}"
    if href.startswith("file://"):
        return Path(urlparse(href).path)
    return Path(href)


def _raster_scale(fields: dict[str, Any], source: str) -> Conversion | None:
    """The scale and offset an asset's ``raster:bands`` (or STAC 1.1 ``bands``) state."""
    for band in fields.get("raster:bands") or []:
        if isinstance(band, dict):
            scale, offset = band.get("scale", 1.0), band.get("offset", 0.0)
            return from_scale_offset(float(scale), float(offset), source)
    for band in _bands_of(fields):
        if "raster:scale" in band or "raster:offset" in band:
            scale, offset = band.get("raster:scale", 1.0), band.get("raster:offset", 0.0)
            return from_scale_offset(float(scale), float(offset), source)
    return None


def _item_hint(item: Any) -> str | None:
    """Why an item is a product of baseline 04.00 or later: its properties, else its id."""
    baseline = str(item.properties.get("s2:processing_baseline", ""))
    if re.fullmatch(r"\d{2}\.\d{2}", baseline):
        return f"processing baseline {baseline}" if float(baseline) >= 4 else None
    when = item.datetime
    if when is not None and when.date() >= BASELINE_04_DATE:
        return f"sensed {when.date().isoformat()}"
    return product_hint([str(item.id)])
