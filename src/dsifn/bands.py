"""Band lists as users write them: 1-based numbers (``4,3,2``) or band names (``B04,B03,B02``).

Parsing happens once, where an option or a configuration is read; what is parsed travels as a
tuple of numbers or a tuple of upper-case names, and the readers of :mod:`dsifn.io` take it
as it is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from dsifn.errors import ConfigError

__all__ = ["BandList", "parse_bands"]

# What a band selection is once parsed: 1-based numbers, or names picking band files.
BandList = tuple[int, ...] | tuple[str, ...]

# A band's name in a file name, as Sentinel-2 products write it: ..._B04.tif, ..._B8A.jp2.
_BAND_NAME = re.compile(r"^B(\d{1,2}|8A)$", re.IGNORECASE)


def parse_bands(text: str | Sequence[int | str], option: str = "bands") -> BandList:
    """Bands from ``"4,3,2"`` (1-based numbers) or ``"B04,B03,B02"`` (names), or a list.

    Numbers pick bands of a file's (or a stack's) band list. Names pick band files by the
    name their file name carries (``*_B04.tif``; Sentinel-2's 13 bands B01 to B12 and B8A),
    in the order given; they are returned upper case.

    Raises:
        ConfigError: If the text is neither numbers of at least 1 nor band names.
    """
    parts = [str(p).strip() for p in (text.split(",") if isinstance(text, str) else text)]
    parts = [p for p in parts if p]
    if parts and all(_BAND_NAME.match(p) for p in parts):
        return tuple(p.upper() for p in parts)
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise ConfigError(
            f"{option} takes 1-based band numbers such as 4,3,2 or band names such as "
            f"B04,B03,B02; got {text!r}"
        )
    return numbers
