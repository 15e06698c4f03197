"""The ``dsifn`` Processing provider: its algorithms, output formats and setting."""

from __future__ import annotations

from qgis.core import QgsProcessingProvider
from qgis.PyQt.QtGui import QIcon

from .algorithm import ICON, DetectChange
from .settings import add_setting, remove_setting


class DsifnProvider(QgsProcessingProvider):
    """Provider id ``dsifn``: change detection with DSIFN models, run by the dsifn command."""

    def id(self) -> str:
        """The prefix of the algorithms' ids (``dsifn:detectchange``)."""
        return "dsifn"

    def name(self) -> str:
        """The name in the toolbox and in Processing's options."""
        return "dsifn"

    def longName(self) -> str:
        """The longer name in tooltips."""
        return "dsifn: change detection (DSIFN)"

    def icon(self) -> QIcon:
        """The provider's icon."""
        return QIcon(ICON)

    def svgIconPath(self) -> str:
        """The icon's file, for the modeler."""
        return ICON

    def load(self) -> bool:
        """Add the setting, then the algorithms."""
        add_setting(self.name())
        self.refreshAlgorithms()
        return True

    def unload(self) -> None:
        """Remove the setting."""
        remove_setting()

    def loadAlgorithms(self) -> None:
        """The provider's algorithms."""
        self.addAlgorithm(DetectChange())

    def supportedOutputRasterLayerExtensions(self) -> list[str]:
        """GeoTIFF change maps (the first is the default of temporary outputs)."""
        return ["tif", "tiff"]

    def supportedOutputVectorLayerExtensions(self) -> list[str]:
        """Polygons in GeoPackage or GeoJSON."""
        return ["gpkg", "geojson"]
