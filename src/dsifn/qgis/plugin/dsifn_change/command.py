"""The ``dsifn predict`` command the plugin runs: its arguments, inputs, environment and output.

Pure Python with no QGIS import, so that it is tested without QGIS. The plugin runs in QGIS's
Python and imports nothing of dsifn (dsifn imports torch); it speaks to dsifn through this
command line only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

MODES = ("probability", "mask")
"""What the change map holds (``--mode``), in the order of the algorithm's MODE choices."""
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
"""How dsifn runs the model (``--runtime``), in the order of the algorithm's RUNTIME choices."""
MODEL_SUFFIXES = (".pt", ".onnx", ".xml")
"""A dsifn checkpoint, an ONNX model, an OpenVINO IR."""
MAP_SUFFIXES = (".tif", ".tiff")
POLYGON_SUFFIXES = (".gpkg", ".geojson")

INSTALL_HINT = (
    "install dsifn with pip into a Python environment of its own and run `dsifn qgis install` "
    "from it, or set the executable in Settings > Options > Processing > Providers > dsifn"
)

# Variables that point a program at an installation's own Python, GDAL or PROJ. QGIS sets
# them for itself on Windows and macOS; a child running another Python must not inherit them.
_INSTALL_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "GDAL_DATA", "GDAL_DRIVER_PATH", "PROJ_LIB")
_INSTALL_VARIABLES += ("PROJ_DATA",)
_ERROR = re.compile(r"^dsifn(?: [\w-]+)?: error: ")
_WROTE = re.compile(r"^wrote .*\(\d+ tiles?, threshold (?P<threshold>[^)\s]+)\)")
# GDAL's DRIVER:... names and QGIS's provider:... outputs; two letters at least, so that a
# Windows drive (C:) is a path.
_DRIVER_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9_]+:")


class SourceError(ValueError):
    """A layer or output the command line cannot be given; the message is one line."""


@dataclass(frozen=True)
class PredictRequest:
    """What the user asked for, in the algorithm's terms (one field per parameter)."""

    model: str  # .pt, .onnx or .xml
    before: Sequence[str]  # T1: one raster, or band files; GDAL dataset names
    after: Sequence[str]  # T2, the same way
    out: str  # the change map (.tif)
    mode: str = "probability"  # one of MODES
    threshold: float | None = None  # None: the model's own
    polygons: str | None = None  # .gpkg or .geojson, or None
    min_area: float = 0.0  # smallest polygon kept, CRS units squared
    tile_size: int | None = None  # None: the model's
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    runtime: str = "auto"  # one of RUNTIMES
    align: bool = False  # resample T2 onto T1's grid


def predict_arguments(request: PredictRequest) -> list[str]:
    """The arguments after the executable: ``predict ... --progress json --overwrite``.

    Processing asks before replacing a file the user chose, and writes its temporary outputs
    to fresh paths, so the change map is always written (``--overwrite``), as every Processing
    algorithm does.
    """
    args = ["predict", "--checkpoint", request.model, "--before", *request.before]
    args += ["--after", *request.after, "--out", request.out, "--mode", request.mode]
    if request.threshold is not None:
        args += ["--threshold", repr(float(request.threshold))]
    if request.polygons:
        args += ["--polygons", request.polygons]
        if request.min_area:
            args += ["--min-area", repr(float(request.min_area))]
    if request.tile_size:
        args += ["--tile-size", str(int(request.tile_size))]
    args += ["--device", request.device or "auto", "--runtime", request.runtime]
    if request.align:
        args.append("--align")
    return [*args, "--progress", "json", "--overwrite"]


def check_model(path: str) -> str:
    """Refuse a model file that is missing or of a kind dsifn does not run."""
    if not os.path.isfile(path):
        raise SourceError(f"model file {path} does not exist")
    if not path.lower().endswith(MODEL_SUFFIXES):
        kinds = ", ".join(MODEL_SUFFIXES)
        raise SourceError(f"the model is a dsifn checkpoint or an exported model ({kinds}): {path}")
    return path


def check_outputs(out: str, polygons: str | None) -> None:
    """Refuse outputs dsifn cannot write: a map that is no GeoTIFF, polygons that are no file.

    Processing offers to save vector outputs into databases or memory layers ("ogr:...",
    "postgis:...", "memory:"); dsifn writes files.
    """
    if not out.lower().endswith(MAP_SUFFIXES):
        raise SourceError(f"the change map is a GeoTIFF: name it .tif, not {out}")
    if polygons and _DRIVER_PREFIX.match(polygons):
        raise SourceError(f"the polygons are written to a file (.gpkg or .geojson), not {polygons}")
    if polygons and not polygons.lower().endswith(POLYGON_SUFFIXES):
        raise SourceError(f"the polygons are a .gpkg or .geojson file, not {polygons}")


def gdal_dataset_name(
    provider: str, source: str, layer: str, is_file: Callable[[str], bool] = os.path.isfile
) -> str:
    """What to give dsifn for a raster layer: its file, or the name GDAL opens it by.

    Args:
        provider: The layer's data provider (``gdal`` for everything GDAL reads).
        source: The layer's source as QGIS holds it.
        layer: The layer's name, for messages.
        is_file: Whether a path is an existing file.

    Returns:
        A file path, a ``/vsi...`` path (``/vsicurl/``, ``/vsizip/``) or a ``DRIVER:...``
        connection string (``GPKG:/data/x.gpkg:table``), as GDAL opens it.

    Raises:
        SourceError: For a layer GDAL does not read (WMS, XYZ, WCS, PostGIS rasters, virtual
            rasters), one with GDAL open options in its source, or a missing file.
    """
    if provider != "gdal":
        raise SourceError(
            f"layer '{layer}' is a {provider} layer, not a raster GDAL reads; save it as a "
            "GeoTIFF first (Export > Save As...)"
        )
    if "|" in source:
        raise SourceError(
            f"layer '{layer}' has GDAL options in its source ({source}); dsifn cannot pass "
            "them: save it as a GeoTIFF first (Export > Save As...)"
        )
    if source.startswith("/vsi") or _DRIVER_PREFIX.match(source):
        return source
    if not is_file(source):
        raise SourceError(f"layer '{layer}': file {source} does not exist")
    return source


def is_path(text: str) -> bool:
    """Whether an executable setting names a file (else a command looked up on ``PATH``)."""
    return os.sep in text or "/" in text


def find_executable(setting: str, recorded: str | None, path: str | None) -> str:
    """The dsifn executable: the Processing setting, else the one that installed the plugin.

    Args:
        setting: The provider's setting: a path, a command name looked up on ``path``, or ""
            (automatic).
        recorded: The executable ``dsifn qgis install`` ran from, if known.
        path: The ``PATH`` to search.

    Raises:
        SourceError: If no executable is found, saying how to install one.
    """
    setting = setting.strip()
    if setting:
        if is_path(setting):
            if os.path.isfile(setting) and os.access(setting, os.X_OK):
                return setting
            raise SourceError(
                f"the dsifn executable set in Processing options, {setting}, "
                f"is not an executable file; {INSTALL_HINT}"
            )
        found = shutil.which(setting, path=path)
        if found is None:
            raise SourceError(f"{setting} was not found on PATH; {INSTALL_HINT}")
        return found
    if recorded and os.path.isfile(recorded) and os.access(recorded, os.X_OK):
        return recorded
    found = shutil.which("dsifn", path=path)
    if found is None:
        raise SourceError(f"dsifn was not found on PATH; {INSTALL_HINT}")
    return found


def read_recorded(plugin_folder: str) -> str | None:
    """The executable recorded by ``dsifn qgis install`` in ``installed.json``, if any."""
    try:
        with open(os.path.join(plugin_folder, "installed.json"), encoding="utf-8") as file:
            value = json.load(file).get("dsifn")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def child_environment(env: Mapping[str, str], qgis_roots: Sequence[str]) -> dict[str, str]:
    """QGIS's environment for the dsifn child, without what points into QGIS's installation.

    QGIS on Windows and macOS sets ``PYTHONHOME``, ``PYTHONPATH``, ``GDAL_DATA`` and
    ``PROJ_LIB`` for its own Python and libraries; the user's Python and its rasterio would
    read them and fail. Entries inside one of ``qgis_roots`` are dropped, the user's own kept.
    Standard streams are UTF-8, so progress and error lines decode the same everywhere.
    """
    roots = [os.path.normcase(os.path.abspath(r)) for r in qgis_roots if r]
    child = dict(env)
    for name in _INSTALL_VARIABLES:
        value = child.pop(name, None)
        kept = [p for p in (value or "").split(os.pathsep) if p and not _inside(p, roots)]
        if kept:
            child[name] = os.pathsep.join(kept)
    child["PYTHONIOENCODING"] = "utf-8"
    return child


def _inside(path: str, roots: Sequence[str]) -> bool:
    full = os.path.normcase(os.path.abspath(path))
    return any(full == root or full.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


@dataclass(frozen=True)
class Progress:
    """One progress line of ``--progress json``."""

    fraction: float | None  # done / total, None when the total is unknown
    done: int
    total: int | None
    unit: str
    desc: str

    def text(self) -> str:
        """E.g. ``dsifn predict: 12/40 tiles``."""
        count = f"{self.done}/{self.total}" if self.total else str(self.done)
        return f"{self.desc}: {count} {self.unit}s".strip(": ")


def parse_progress(line: str) -> Progress | None:
    """The progress in a line of standard error, or None for any other line."""
    text = line.strip()
    if not text.startswith("{"):
        return None
    try:
        record = json.loads(text)
        fraction = record["progress"]
        return Progress(
            fraction=None if fraction is None else float(fraction),
            done=int(record["done"]),
            total=None if record.get("total") is None else int(record["total"]),
            unit=str(record.get("unit", "")),
            desc=str(record.get("desc", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def is_error_line(line: str) -> bool:
    """Whether a line of standard error is the command's error (``dsifn predict: error: ...``)."""
    return bool(_ERROR.match(line))


def cancel_message(returncode: int) -> str:
    """What to tell the user after Cancel: whether dsifn stopped itself or had to be killed."""
    if returncode < 0:
        return (
            f"Canceled: dsifn did not stop in time and was stopped by signal {-returncode}; "
            "a .dsifn-* work folder may remain (the next run removes it)."
        )
    return "Canceled: dsifn stopped and removed its work files."


def failure_message(returncode: int, stderr_lines: Sequence[str]) -> str:
    """The one line to show for a run that failed: the command's error line if it wrote one."""
    errors = [line for line in stderr_lines if is_error_line(line)]
    if errors:
        return errors[-1].strip()
    others = [line.strip() for line in stderr_lines if line.strip() and not parse_progress(line)]
    if returncode < 0:
        return f"dsifn was stopped by signal {-returncode}"
    last = f": {others[-1]}" if others else ""
    return f"dsifn exited with status {returncode}{last}"


def used_threshold(stdout_lines: Sequence[str]) -> float | None:
    """The decision threshold ``dsifn predict`` reports in its ``wrote ...`` line."""
    for line in stdout_lines:
        found = _WROTE.match(line.strip())
        if found:
            try:
                return float(found["threshold"])
            except ValueError:
                return None
    return None
