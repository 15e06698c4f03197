"""``dsifn:detectchange``: the change map of two rasters, by running ``dsifn predict``.

The algorithm turns its parameters into a ``dsifn predict`` command line
(:mod:`.command`), runs it in the user's own Python environment as a child process
(:mod:`.process`) and reports its progress lines to Processing's progress bar. QGIS never
imports torch. What it writes is what ``dsifn predict`` writes, byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from qgis.core import (
    QgsApplication,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingOutputNumber,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterEnum,
    QgsProcessingParameterFile,
    QgsProcessingParameterMultipleLayers,
    QgsProcessingParameterNumber,
    QgsProcessingParameterRasterDestination,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorDestination,
)
from qgis.PyQt.QtGui import QIcon

from . import process, styles
from .command import (
    MODES,
    RUNTIMES,
    PredictRequest,
    Progress,
    SourceError,
    cancel_message,
    check_model,
    check_outputs,
    child_environment,
    failure_message,
    find_executable,
    gdal_dataset_name,
    predict_arguments,
    used_threshold,
)
from .settings import executable_setting, recorded_executable

ICON = os.path.join(os.path.dirname(__file__), "icon.svg")

HELP = """Detects change between two dates of the same place with a DSIFN model, by running \
<code>dsifn predict</code> in your own Python environment (QGIS never loads torch).

<b>Before</b>, <b>After</b>: one raster layer per date, or several single-band layers (e.g. \
Sentinel-2 band files). The model's input contract picks the bands by name and scales them \
as on the command line.
<b>Model</b>: a dsifn checkpoint (.pt) or an exported model (.onnx, .xml).
<b>Threshold</b>: change where probability &gt; threshold; empty: the model's own.
<b>Change map</b>: a GeoTIFF of the change probability (0-1, nodata -1) or of the mask (0/1).
<b>Changed areas</b>: optional polygons (.gpkg, .geojson).

The dsifn executable is found on PATH, or where <code>dsifn qgis install</code> ran from; set \
it in Settings > Options > Processing > Providers > dsifn. Cancel stops dsifn, which removes \
its work files: nothing is left at the output paths."""


class DetectChange(QgsProcessingAlgorithm):
    """The change map (and optional polygons) of a BEFORE / AFTER pair of rasters."""

    BEFORE = "BEFORE"
    AFTER = "AFTER"
    MODEL = "MODEL"
    THRESHOLD = "THRESHOLD"
    MODE = "MODE"
    OUTPUT = "OUTPUT"
    POLYGONS = "POLYGONS"
    MIN_AREA = "MIN_AREA"
    TILE_SIZE = "TILE_SIZE"
    DEVICE = "DEVICE"
    RUNTIME = "RUNTIME"
    ALIGN = "ALIGN"
    USED_THRESHOLD = "USED_THRESHOLD"

    def name(self) -> str:
        """The id within the provider: ``dsifn:detectchange``."""
        return "detectchange"

    def displayName(self) -> str:
        """The name in the toolbox."""
        return "Detect change (DSIFN)"

    def group(self) -> str:
        """The toolbox group."""
        return "Change detection"

    def groupId(self) -> str:
        """The group's id."""
        return "changedetection"

    def shortHelpString(self) -> str:
        """The help beside the dialog."""
        return HELP

    def icon(self) -> QIcon:
        """The provider's icon."""
        return QIcon(ICON)

    def tags(self) -> list[str]:
        """Words the toolbox search finds the algorithm by."""
        return ["change", "detection", "deep learning", "dsifn", "bi-temporal", "sentinel"]

    def createInstance(self) -> DetectChange:
        """A fresh copy, as Processing runs each execution on its own."""
        return DetectChange()

    def initAlgorithm(self, config: dict[str, Any] | None = None) -> None:
        """Declare the parameters: inputs and outputs first, then the advanced ones."""
        self._add_inputs()
        self._add_outputs()
        self._add_advanced()
        self.addOutput(QgsProcessingOutputNumber(self.USED_THRESHOLD, "Threshold used"))

    def _add_inputs(self) -> None:
        for name, label in ((self.BEFORE, "Before (T1)"), (self.AFTER, "After (T2)")):
            layers = QgsProcessingParameterMultipleLayers(
                name, f"{label}: a raster, or its band layers", QgsProcessing.TypeRaster
            )
            layers.setMinimumNumberInputs(1)
            self.addParameter(layers)
        self.addParameter(
            QgsProcessingParameterFile(
                self.MODEL,
                "Model (dsifn checkpoint .pt, or exported .onnx / .xml)",
                fileFilter="dsifn models (*.pt *.onnx *.xml);;All files (*.*)",
            )
        )
        threshold = QgsProcessingParameterNumber(
            self.THRESHOLD,
            "Threshold (empty: the model's own)",
            QgsProcessingParameterNumber.Double,
            optional=True,
            minValue=0.0,
            maxValue=1.0,
        )
        self.addParameter(threshold)
        self.addParameter(
            QgsProcessingParameterEnum(self.MODE, "Change map holds", list(MODES), defaultValue=0)
        )

    def _add_outputs(self) -> None:
        self.addParameter(QgsProcessingParameterRasterDestination(self.OUTPUT, "Change map"))
        self.addParameter(
            QgsProcessingParameterVectorDestination(
                self.POLYGONS,
                "Changed areas",
                QgsProcessing.TypeVectorPolygon,
                optional=True,
                createByDefault=False,
            )
        )

    def _add_advanced(self) -> None:
        advanced = [
            QgsProcessingParameterNumber(
                self.MIN_AREA,
                "Smallest changed area kept (CRS units squared)",
                QgsProcessingParameterNumber.Double,
                defaultValue=0.0,
                minValue=0.0,
            ),
            QgsProcessingParameterNumber(
                self.TILE_SIZE,
                "Tile size in pixels (empty: the model's)",
                QgsProcessingParameterNumber.Integer,
                optional=True,
                minValue=16,
            ),
            QgsProcessingParameterString(
                self.DEVICE, "Device (auto, cpu, cuda, cuda:N)", defaultValue="auto"
            ),
            QgsProcessingParameterEnum(self.RUNTIME, "Runtime", list(RUNTIMES), defaultValue=0),
            QgsProcessingParameterBoolean(
                self.ALIGN, "Resample After onto Before's grid if they differ", defaultValue=False
            ),
        ]
        for parameter in advanced:
            parameter.setFlags(parameter.flags() | QgsProcessingParameterDefinition.FlagAdvanced)
            self.addParameter(parameter)

    def processAlgorithm(
        self,
        parameters: dict[str, Any],
        context: QgsProcessingContext,
        feedback: QgsProcessingFeedback,
    ) -> dict[str, Any]:
        """Run ``dsifn predict`` and return its outputs; on Cancel, nothing."""
        try:
            request = self._request(parameters, context)
            executable = find_executable(
                executable_setting(), recorded_executable(), os.environ.get("PATH")
            )
        except SourceError as exc:
            raise QgsProcessingException(str(exc)) from None
        argv = [executable, *predict_arguments(request)]
        feedback.pushCommandInfo(_shown(argv))
        outcome = self._run(argv, feedback)
        if outcome.canceled:
            feedback.pushInfo(cancel_message(outcome.returncode))
            return {}
        if outcome.returncode != 0:
            raise QgsProcessingException(failure_message(outcome.returncode, outcome.stderr))
        threshold = used_threshold(outcome.stdout)
        styles.style_on_load(context, request, threshold)
        results: dict[str, Any] = {self.OUTPUT: request.out, self.USED_THRESHOLD: threshold}
        if request.polygons:
            results[self.POLYGONS] = request.polygons
        return results

    def _request(self, parameters: dict[str, Any], context: QgsProcessingContext) -> PredictRequest:
        """The parameters as a request, every input and output checked."""
        polygons = self.parameterAsOutputLayer(parameters, self.POLYGONS, context) or None
        out = self.parameterAsOutputLayer(parameters, self.OUTPUT, context)
        check_outputs(out, polygons)
        tile = self._optional(parameters, self.TILE_SIZE, context)
        return PredictRequest(
            model=check_model(self.parameterAsFile(parameters, self.MODEL, context)),
            before=self._sources(parameters, self.BEFORE, context),
            after=self._sources(parameters, self.AFTER, context),
            out=out,
            mode=MODES[self.parameterAsEnum(parameters, self.MODE, context)],
            threshold=self._optional(parameters, self.THRESHOLD, context),
            polygons=polygons,
            min_area=self.parameterAsDouble(parameters, self.MIN_AREA, context),
            tile_size=None if tile is None else int(tile),
            device=self.parameterAsString(parameters, self.DEVICE, context).strip() or "auto",
            runtime=RUNTIMES[self.parameterAsEnum(parameters, self.RUNTIME, context)],
            align=self.parameterAsBool(parameters, self.ALIGN, context),
        )

    def _optional(
        self, parameters: dict[str, Any], name: str, context: QgsProcessingContext
    ) -> float | None:
        """An optional number, None when left empty (None, "" or QGIS's NULL)."""
        value = parameters.get(name)
        if value is None or value == "" or str(value) == "NULL":
            return None
        return float(self.parameterAsDouble(parameters, name, context))

    def _sources(
        self, parameters: dict[str, Any], name: str, context: QgsProcessingContext
    ) -> list[str]:
        """The GDAL dataset name of each layer of a date, in the order given."""
        layers = self.parameterAsLayerList(parameters, name, context)
        if not layers:
            raise SourceError(f"{name}: no raster layer given")
        return [
            gdal_dataset_name(layer.providerType(), layer.source(), layer.name())
            for layer in layers
        ]

    def _run(self, argv: list[str], feedback: QgsProcessingFeedback) -> process.Outcome:
        """Run the command, its progress on the progress bar and its lines in the log."""

        def progress(step: Progress) -> None:
            if step.fraction is not None:
                feedback.setProgress(100.0 * step.fraction)
            feedback.setProgressText(step.text())

        listener = process.Listener(
            progress=progress,
            message=feedback.pushInfo,
            output=feedback.pushConsoleInfo,
            canceled=feedback.isCanceled,
        )
        try:
            return process.run(argv, _environment(), listener)
        except OSError as exc:
            raise QgsProcessingException(f"cannot start {argv[0]}: {exc.strerror or exc}") from None


def _environment() -> dict[str, str]:
    """The child's environment: QGIS's, without what points into QGIS's own installation."""
    roots = [QgsApplication.prefixPath(), sys.prefix, sys.base_prefix]
    roots += [os.environ.get("OSGEO4W_ROOT", "")]
    bundle = QgsApplication.prefixPath().split(".app/")[0]  # macOS: the whole QGIS.app
    if bundle != QgsApplication.prefixPath():
        roots.append(bundle + ".app")
    return child_environment(os.environ, roots)


def _shown(argv: list[str]) -> str:
    """The command as the user would type it in a shell."""
    if os.name == "nt":
        return subprocess.list2cmdline(argv)
    import shlex

    return " ".join(shlex.quote(arg) for arg in argv)
