"""dsifn change detection in QGIS: a Processing provider that runs the dsifn command.

QGIS imports this package; nothing in it imports dsifn or torch. ``classFactory`` is QGIS's
entry point; the modules that need no QGIS (:mod:`.command`, :mod:`.process`) import nothing
of it, so that they are tested without QGIS.
"""

from __future__ import annotations

from typing import Any


def classFactory(iface: Any) -> Any:
    """The plugin object QGIS keeps while the plugin is loaded."""
    from .plugin import DsifnPlugin

    return DsifnPlugin(iface)
