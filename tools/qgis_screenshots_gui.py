"""Inside QGIS (``qgis --code``, started by qgis_screenshots.py): grab the dialog, the map.

Reads ``DSIFN_SHOTS`` (JSON: ``before``, ``after``, ``model``, ``out``). Opens the dialog of
dsifn:detectchange filled in and grabs it; runs the algorithm as the toolbox does (outputs
loaded and styled); shows the change map over the before image, the Layers panel with its
legend and the toolbox, and grabs QGIS's window. Then quits QGIS. Any error ends QGIS with
status 1 and the traceback on standard error.
"""

import json
import os
import sys
import traceback

import processing
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle
from qgis.gui import QgsCollapsibleGroupBoxBasic
from qgis.PyQt import sip
from qgis.PyQt.QtCore import QTimer
from qgis.PyQt.QtWidgets import QDockWidget, QGroupBox, QLineEdit
from qgis.utils import iface

SPEC = json.loads(os.environ["DSIFN_SHOTS"])
ALGORITHM = "dsifn:detectchange"
_kept = []  # Qt objects that must outlive the function that made them


def step(function, *args):
    """``function`` with its arguments, quitting QGIS with status 1 if it fails."""

    def guarded():
        try:
            function(*args)
        except Exception:  # any error must end QGIS, not open its error dialog
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)

    return guarded


def later(ms, function, *args):
    """Run a guarded step after ``ms`` milliseconds of event loop."""
    QTimer.singleShot(ms, step(function, *args))


def start():
    """Add the two dates to the project and open the algorithm's dialog, filled in."""
    if QgsApplication.processingRegistry().algorithmById(ALGORITHM) is None:
        raise RuntimeError("the dsifn plugin is not loaded")
    before = QgsRasterLayer(SPEC["before"], "Before")
    after = QgsRasterLayer(SPEC["after"], "After")
    QgsProject.instance().addMapLayers([after, before])
    params = {
        "BEFORE": [before.id()],
        "AFTER": [after.id()],
        "MODEL": SPEC["model"],
        "OUTPUT": "TEMPORARY_OUTPUT",
        "POLYGONS": "TEMPORARY_OUTPUT",
        "MIN_AREA": 4.0,
    }
    dialog = processing.createAlgorithmDialog(ALGORITHM, params)
    advanced = dialog.findChild(QGroupBox, "grpAdvanced")  # shown open: all the options
    sip.cast(advanced, QgsCollapsibleGroupBoxBasic).setCollapsed(False)
    dialog.resize(980, 860)
    dialog.show()
    _kept.append(dialog)
    later(1500, grab_dialog, dialog, params, before)


def grab_dialog(dialog, params, before):
    """Save the dialog, close it, run the algorithm and load its styled outputs."""
    dialog.grab().save(os.path.join(SPEC["out"], "qgis-dialog.png"))
    dialog.close()
    processing.runAndLoadResults(ALGORITHM, params)
    QgsProject.instance().layerTreeRoot().findLayer(
        QgsProject.instance().mapLayersByName("After")[0].id()
    ).setItemVisibilityChecked(False)
    show_panels()
    later(1000, zoom_to, before)


def show_panels():
    """Layers (the change map's legend open) and the toolbox (filtered to dsifn), no Browser."""
    for dock in iface.mainWindow().findChildren(QDockWidget):
        if dock.objectName() == "Browser":
            dock.setVisible(False)
        if dock.objectName() == "ProcessingToolbox":
            dock.setVisible(True)
            search = dock.findChild(QLineEdit)
            if search is not None:
                search.setText("dsifn")


def zoom_to(layer):
    """Fill the canvas with the scene (its width; the top and bottom are cut to fit)."""
    canvas = iface.mapCanvas()
    extent = layer.extent()
    height = extent.width() * canvas.height() / canvas.width()
    middle = extent.center().y()
    canvas.setExtent(
        QgsRectangle(extent.xMinimum(), middle - height / 2, extent.xMaximum(), middle + height / 2)
    )
    canvas.refresh()
    change = QgsProject.instance().mapLayersByName("Change map")[0]
    iface.setActiveLayer(change)
    for node in QgsProject.instance().layerTreeRoot().findLayers():
        node.setExpanded(node.layerId() == change.id())
    later(3000, grab_window)


def grab_window():
    """Save QGIS's window and quit."""
    iface.mapCanvas().waitWhileRendering()
    iface.mainWindow().grab().save(os.path.join(SPEC["out"], "qgis-change-map.png"))
    QgsProject.instance().setDirty(False)
    QgsProject.instance().clear()
    QgsApplication.exit(0)


iface.mainWindow().resize(1280, 800)
later(2000, start)
