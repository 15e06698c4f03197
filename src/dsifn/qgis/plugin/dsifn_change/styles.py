"""How the outputs look when they load: no change transparent, change in a strong colour.

A probability map gets a ramp that stays transparent up to half the threshold, turns orange at
the threshold and crimson at 1; a mask shows change in crimson and no change not at all;
polygons are crimson outlines.
Nodata (-1) is transparent as the file says.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from qgis.core import (
    QgsColorRampShader,
    QgsFillSymbol,
    QgsMapLayer,
    QgsPalettedRasterRenderer,
    QgsProcessingContext,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsRasterShader,
    QgsSingleBandPseudoColorRenderer,
    QgsSingleSymbolRenderer,
    QgsVectorLayer,
)
from qgis.PyQt.QtGui import QColor

from .command import PredictRequest

CHANGE = QColor(230, 0, 73)
"""Crimson: visible over imagery, vegetation and water alike."""
SEEN_THROUGH = QColor(230, 0, 73, 200)
"""Crimson that lets the image beneath show a little: what appeared or vanished."""
DEFAULT_THRESHOLD = 0.5

# Processing does not own post-processors: each must outlive the run that set it.
_KEEP: deque[QgsProcessingLayerPostProcessorInterface] = deque(maxlen=64)


def probability_renderer(layer: QgsRasterLayer, threshold: float) -> Any:
    """A ramp over band 1: transparent to half the threshold, orange at it, crimson at 1."""
    middle = min(max(threshold, 0.02), 0.99)
    items = [
        QgsColorRampShader.ColorRampItem(0.0, QColor(254, 217, 118, 0), "0 no change"),
        QgsColorRampShader.ColorRampItem(middle / 2, QColor(254, 217, 118, 0), ""),
        QgsColorRampShader.ColorRampItem(middle, QColor(253, 141, 60, 160), f"{threshold:g}"),
        QgsColorRampShader.ColorRampItem(1.0, SEEN_THROUGH, "1 change"),
    ]
    ramp = QgsColorRampShader(0.0, 1.0)
    ramp.setColorRampType(QgsColorRampShader.Interpolated)
    ramp.setColorRampItemList(items)
    shader = QgsRasterShader(0.0, 1.0)
    shader.setRasterShaderFunction(ramp)
    renderer = QgsSingleBandPseudoColorRenderer(layer.dataProvider(), 1, shader)
    renderer.setClassificationMin(0.0)
    renderer.setClassificationMax(1.0)
    return renderer


def mask_renderer(layer: QgsRasterLayer) -> Any:
    """Two classes over band 1: 0 transparent, 1 crimson."""
    classes = [
        QgsPalettedRasterRenderer.Class(0, QColor(0, 0, 0, 0), "no change"),
        QgsPalettedRasterRenderer.Class(1, SEEN_THROUGH, "change"),
    ]
    return QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes)


def polygon_renderer() -> Any:
    """Crimson outlines over a faint crimson fill."""
    symbol = QgsFillSymbol.createSimple(
        {"color": "230,0,73,50", "outline_color": "230,0,73,255", "outline_width": "0.6"}
    )
    return QgsSingleSymbolRenderer(symbol)


def apply_style(layer: QgsMapLayer, kind: str, threshold: float | None) -> None:
    """Style an output layer: ``kind`` is ``probability``, ``mask`` or ``polygons``."""
    if kind == "polygons" and isinstance(layer, QgsVectorLayer):
        layer.setRenderer(polygon_renderer())
    elif kind == "mask" and isinstance(layer, QgsRasterLayer):
        layer.setRenderer(mask_renderer(layer))
    elif kind == "probability" and isinstance(layer, QgsRasterLayer):
        value = DEFAULT_THRESHOLD if threshold is None else threshold
        layer.setRenderer(probability_renderer(layer, value))
    else:
        return
    layer.triggerRepaint()


class _Styler(QgsProcessingLayerPostProcessorInterface):
    """Styles one output once Processing has loaded it into the project (main thread)."""

    def __init__(self, kind: str, threshold: float | None) -> None:
        super().__init__()
        self.kind = kind
        self.threshold = threshold

    def postProcessLayer(
        self, layer: QgsMapLayer, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        """Apply the style."""
        apply_style(layer, self.kind, self.threshold)


def style_on_load(
    context: QgsProcessingContext, request: PredictRequest, threshold: float | None
) -> None:
    """Have the outputs styled when Processing loads them (not in scripts that only run)."""
    outputs = [(request.out, request.mode), (request.polygons, "polygons")]
    for path, kind in outputs:
        if path and context.willLoadLayerOnCompletion(path):
            styler = _Styler(kind, threshold)
            _KEEP.append(styler)
            context.layerToLoadOnCompletionDetails(path).setPostProcessor(styler)
