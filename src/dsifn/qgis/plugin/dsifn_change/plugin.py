"""The QGIS plugin: adds the dsifn provider to Processing and removes it on unload."""

from __future__ import annotations

from typing import Any

from qgis.core import QgsApplication

from .provider import DsifnProvider


class DsifnPlugin:
    """Registers :class:`DsifnProvider` in ``initProcessing``, as Processing plugins do.

    The plugin keeps the provider: one added without a reference that lives on is
    garbage-collected by Python and vanishes from the toolbox.
    """

    def __init__(self, iface: Any = None) -> None:
        self.iface = iface
        self.provider: DsifnProvider | None = None

    def initProcessing(self) -> None:
        """Add the provider (QGIS calls this also in qgis_process, where there is no GUI)."""
        if self.provider is None:
            self.provider = DsifnProvider()
            QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:
        """Nothing but the provider: the algorithm lives in the Processing toolbox."""
        self.initProcessing()

    def unload(self) -> None:
        """Remove the provider."""
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
            self.provider = None
