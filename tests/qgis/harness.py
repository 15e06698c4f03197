"""Runs dsifn:detectchange inside QGIS, headless, for the tests: ``python3 harness.py SPEC``.

Run by QGIS's own Python (not the test suite's: it cannot import qgis). SPEC is a JSON file:
``plugins`` (the folder holding ``dsifn_change``), ``params`` (the algorithm's parameters),
optional ``layers`` (``{"name", "uri", "provider"}`` added to the project first, so that a
parameter can name them), ``load`` (run as the dialog does, loading and styling the outputs),
``settings`` (Processing settings to set first, e.g. ``DSIFN_EXECUTABLE``), ``exec`` (Python
code to run instead, as typed in QGIS's console: ``processing`` is ready), ``task`` (run in a
background task, as the dialog does, while the main thread's event loop
turns), ``cancel_after`` (press Cancel, from the main thread, once this many progress steps
have arrived), ``keep`` (a folder
to copy the outputs into: QGIS deletes its temporary outputs when it exits). The last line of
standard output is a JSON report: the results or the error, the progress seen, the styles.
"""

import json
import os
import shutil
import sys
import threading

from qgis.core import (
    QgsApplication,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProject,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QEventLoop, QTimer


class Feedback(QgsProcessingFeedback):
    """Records progress and messages; presses Cancel after ``cancel_after`` progress steps."""

    def __init__(self, cancel_after):
        super().__init__()
        self.cancel_after = cancel_after
        self.steps, self.texts, self.infos, self.commands, self.errors = [], [], [], [], []
        self.ran_in_main_thread = None
        self.progressChanged.connect(self._step)

    def _step(self, value):
        self.steps.append(value)
        if self.cancel_after is not None and len(self.steps) >= self.cancel_after:
            self.cancel()

    def setProgressText(self, text):
        self.texts.append(text)

    def pushInfo(self, info):
        self.infos.append(info)

    def pushCommandInfo(self, info):
        self.ran_in_main_thread = threading.current_thread() is threading.main_thread()
        self.commands.append(info)

    def reportError(self, error, fatalError=False):
        self.errors.append(error)


def add_layers(specs):
    for spec in specs:
        maker = QgsVectorLayer if spec.get("vector") else QgsRasterLayer
        layer = maker(spec["uri"], spec["name"], spec.get("provider", "gdal"))
        if not layer.isValid():
            raise SystemExit(f"harness: layer {spec['name']} ({spec['uri']}) is not valid")
        QgsProject.instance().addMapLayer(layer)


def styles(skipped):
    """Renderer and source of each layer of the project, by name, but those with ids skipped."""
    found = {}
    for layer in QgsProject.instance().mapLayers().values():
        if layer.id() in skipped:
            continue
        renderer = layer.renderer()
        found[layer.name()] = {
            "renderer": type(renderer).__name__ if renderer else None,
            "source": layer.source(),
        }
    return found


def keep(results, folder):
    kept = {}
    for name, value in (results or {}).items():
        if isinstance(value, str) and os.path.isfile(value):
            os.makedirs(folder, exist_ok=True)
            kept[name] = shutil.copy(value, os.path.join(folder, os.path.basename(value)))
    return kept


def run_in_task(params, feedback):
    """Run as the dialog does: in a background task, the main thread's event loop turning."""
    alg = QgsApplication.processingRegistry().createAlgorithmById("dsifn:detectchange")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    task = QgsProcessingAlgRunnerTask(alg, params, context, feedback)
    done, ticks, loop = {}, [], QEventLoop()
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(1))
    timer.start(50)

    def executed(ok, results):
        done.update(ok=ok, results=results)
        loop.quit()

    task.executed.connect(executed)
    QgsApplication.taskManager().addTask(task)
    loop.exec_()
    timer.stop()
    error = None if done["ok"] or feedback.isCanceled() else (feedback.errors or ["failed"])[-1]
    if error:
        raise QgsProcessingException(error)
    return done["results"], len(ticks)


def main(spec_path):
    with open(spec_path, encoding="utf-8") as file:
        spec = json.load(file)
    app = QgsApplication([], False)
    app.initQgis()
    sys.path.append(os.path.join(QgsApplication.pkgDataPath(), "python", "plugins"))
    sys.path.insert(0, spec["plugins"])
    from processing.core.Processing import Processing

    Processing.initialize()
    import dsifn_change
    import processing

    plugin = dsifn_change.classFactory(None)  # kept: a provider without a reference is lost
    plugin.initProcessing()
    from processing.core.ProcessingConfig import ProcessingConfig

    for name, value in spec.get("settings", {}).items():
        ProcessingConfig.setSettingValue(name, value)
    add_layers(spec.get("layers", []))
    before = {layer.id() for layer in QgsProject.instance().mapLayers().values()}
    feedback = Feedback(spec.get("cancel_after"))
    run = processing.runAndLoadResults if spec.get("load") else processing.run
    report = {"error": None, "results": None, "ticks": None}
    try:
        if spec.get("exec"):  # a script as a user types it in QGIS's Python console
            namespace = {}
            exec(spec["exec"], namespace)
            results = {"layers": len(QgsProject.instance().mapLayers()) - len(before)}
        elif spec.get("task"):
            results, report["ticks"] = run_in_task(spec["params"], feedback)
        else:
            results = run("dsifn:detectchange", spec["params"], feedback=feedback)
        report["results"] = {
            k: v if isinstance(v, (str, float, int)) or v is None else str(v)
            for k, v in results.items()
        }
    except QgsProcessingException as exc:
        report["error"] = str(exc)
    report.update(
        steps=feedback.steps,
        texts=feedback.texts,
        infos=feedback.infos,
        commands=feedback.commands,
        canceled=feedback.isCanceled(),
        ran_in_main_thread=feedback.ran_in_main_thread,
        loaded=styles(before),
    )
    if spec.get("keep"):
        report["kept"] = keep(report["results"], spec["keep"])
    plugin.unload()
    print(json.dumps(report))
    QgsProject.instance().clear()
    app.exitQgis()


if __name__ == "__main__":
    main(sys.argv[1])
