"""OpenVINO IR export of any network, int8 with NNCF, and a runner on it (``openvino`` extra).

The IR (an ``.xml`` graph and its ``.bin`` weights beside it) computes what every export
computes (:mod:`dsifn.interop.exported`): normalised ``t1``, ``t2`` (B, C, H, W), H and W
multiples of 16 (:class:`OpenVINORunner` pads others), to the change probabilities of each of
the network's outputs (``prob_stride1`` ... ``prob_stride16`` for DSIFN, ``prob_stride1`` for
a baseline). It is converted by ``openvino.convert_model`` from the
PyTorch module (traced on a 32-pixel pair, with dynamic batch and sides), not from the ONNX
export: it needs no ONNX packages and one exporter fewer, and its outputs match PyTorch
to about 1e-6. Weights are stored in fp32 (not OpenVINO's default fp16 compression), so the
fp32 IR is the model that was checked.

``int8=True`` (or :func:`quantize_openvino` on an fp32 IR) quantises it with NNCF on
calibration tiles of a dataset (:mod:`dsifn.interop.quantize`), measures what int8 costs on
held-out tiles and refuses a model that loses too much F1; nothing is written then.

What is needed to use the IR is in its runtime info (``rt_info``) under the key ``"dsifn"``, as
the same JSON an ONNX export holds: input contract, threshold, model configuration, precision
and the accuracy cost of int8, and the SHA-256 of the ``.bin`` (``weights_sha256``), so that
an ``.xml`` knows its own ``.bin``.

Both files are written through :func:`dsifn.io.atomic.staged`: saved under their own names in
a private folder beside the output, then the ``.bin`` and last the ``.xml`` renamed into
place. Two renames are not one: a reader that comes between them, or finds the pair after a
crash between them, sees the new ``.bin`` beside the old ``.xml``. Every load therefore hashes
the ``.bin`` it reads and compares it with the digest its ``.xml`` records
(:func:`_read_model`); a pair that does not belong together is refused in one line, never
served. The digest is of the bytes OpenVINO writes, so it is known only once the ``.bin`` is
written: :func:`_save` saves the model, hashes its ``.bin``, records the digest and saves
again, and checks that the second ``.bin`` is the same bytes. IRs written before the digest
existed record none and load unchecked.

:class:`OpenVINORunner` compiles for the CPU with the latency hint (the tile loop sends one
batch at a time, so one request should use every core); threads, streams and any other
OpenVINO property are its arguments.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, get_args
from xml.etree import ElementTree

import numpy as np
import torch

from dsifn._optional import require
from dsifn._validation import check_choice
from dsifn.devices import resolve_precision
from dsifn.errors import ConfigError, WeightsError
from dsifn.interop.exported import (
    INPUT_NAMES,
    METADATA_KEY,
    ExportedRunner,
    Probabilities,
    check_against_torch,
    contract_of,
    export_metadata,
    output_names,
    parse_metadata,
    sample_pair,
)
from dsifn.interop.quantize import (
    Calibration,
    CalibrationSet,
    check_cost,
    measure_cost,
    quantize_openvino_model,
    read_calibration,
)
from dsifn.io.atomic import check_input_file, check_output_path, file_sha256, staged
from dsifn.models.padding import SIZE_MULTIPLE
from dsifn.models.registry import ChangeNetwork

__all__ = [
    "FORMAT",
    "WEIGHTS_DIGEST",
    "Hint",
    "OpenVINORunner",
    "export_openvino",
    "performance_config",
    "quantize_openvino",
    "read_info",
]

FORMAT = "dsifn-openvino"
# The entry of the metadata that holds the SHA-256 (hex) of the IR's .bin.
WEIGHTS_DIGEST = "weights_sha256"
# OpenVINO's performance hints: one request at lowest latency, or many requests in parallel.
Hint = Literal["latency", "throughput"]
_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def _openvino(what: str) -> ModuleType:
    return require("openvino", "openvino", what)


def _ir_path(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """The ``.xml`` to write, refused (with its ``.bin``) before any work."""
    out = Path(path)
    if out.suffix.lower() != ".xml":
        raise ConfigError(
            f"an OpenVINO IR is written as an .xml file with its .bin beside it; got {out}"
        )
    check_output_path(out, overwrite=overwrite)
    check_output_path(out.with_suffix(".bin"), overwrite=overwrite)
    return out


def _convert(net: Probabilities) -> Any:
    """The fp32 ``openvino.Model`` of ``net``, with dynamic batch (and sides, unless fixed).

    The module is traced here, once and unchecked: handing ``convert_model`` the module
    itself takes twice as long for the same graph.
    """
    ov = _openvino("OpenVINO export")
    cfg = net.model.config
    side = cfg.input_size or 2 * SIZE_MULTIPLE
    sides = [side, side] if cfg.input_size else [-1, -1]
    shape = ov.PartialShape([-1, cfg.in_channels, *sides])
    sample = sample_pair(cfg.in_channels, side, side)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent branches
            traced = torch.jit.trace(net, sample, check_trace=False)  # type: ignore[no-untyped-call]
            converted = ov.convert_model(traced, example_input=sample, input=[shape, shape])
    except Exception as exc:  # the tracer and converter raise untyped errors
        raise WeightsError(f"OpenVINO conversion failed: {exc}") from exc
    for port, name in zip(converted.inputs, INPUT_NAMES, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(converted.outputs, output_names(net.model), strict=True):
        port.get_tensor().set_names({name})
    return converted


def _info_of(model: Any, where: str) -> dict[str, Any]:
    """The ``dsifn`` runtime info of an ``openvino.Model``, checked."""
    key = [METADATA_KEY]
    text = model.get_rt_info(key).astype(str) if model.has_rt_info(key) else None
    return parse_metadata(text, where, FORMAT)


def _set_info(model: Any, info: Mapping[str, Any]) -> None:
    model.set_rt_info(json.dumps(info, default=str), [METADATA_KEY])


def _save(model: Any, xml: Path) -> None:
    """Write ``model`` as ``xml`` and its ``.bin``, the ``.xml`` recording the ``.bin``'s digest.

    OpenVINO writes both files in one call, and the digest is of the bytes it writes; so the
    model is saved, its ``.bin`` hashed, the digest set in its runtime info and the model saved
    again (the runtime info is in the ``.xml``: the ``.bin`` does not change). The second
    ``.bin`` is hashed too, so an ``.xml`` never records another ``.bin`` than its own.

    Raises:
        WeightsError: If the two saves wrote different weights.
    """
    ov = _openvino("OpenVINO export")
    weights = xml.with_suffix(".bin")
    info = {k: v for k, v in _info_of(model, "the model to save").items() if k != WEIGHTS_DIGEST}
    _set_info(model, info)
    ov.save_model(model, str(xml), compress_to_fp16=False)
    digest = file_sha256(weights)
    _set_info(model, {**info, WEIGHTS_DIGEST: digest})
    ov.save_model(model, str(xml), compress_to_fp16=False)
    if file_sha256(weights) != digest:
        raise WeightsError(
            "OpenVINO wrote different weights when saving the same model twice; the IR's "
            "digest could not be recorded and nothing was written"
        )


def export_openvino(
    model: ChangeNetwork,
    path: str | os.PathLike[str],
    *,
    int8: bool = False,
    calibration: Calibration | str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    meta: dict[str, Any] | None = None,
    check: bool = True,
) -> Path:
    """Export ``model`` to an OpenVINO IR, atomically, with its metadata; in int8 if asked.

    Args:
        model: Any network of the package; it is moved to the CPU in float32 and set to eval
            mode.
        path: The ``.xml`` to write; its ``.bin`` goes beside it.
        int8: Quantise the model with NNCF on calibration tiles.
        calibration: Where the tiles come from (a :class:`~dsifn.interop.quantize.Calibration`
            or a dataset folder, read with its defaults); needed by ``int8``.
        overwrite: Replace existing files.
        meta: Metadata to record; defaults to ``model.checkpoint_meta``.
        check: Run the fp32 model in OpenVINO at a size other than the traced one and compare
            it with PyTorch (max difference 1e-4) before going on.

    Returns:
        The ``.xml`` written.

    Raises:
        ConfigError: If ``path`` is not an ``.xml`` or a needed extra is missing.
        OutputExistsError: If the ``.xml`` or ``.bin`` exists and ``overwrite`` is false.
        WeightsError: If conversion fails, the IR disagrees with PyTorch, or the int8 model
            loses more F1 than ``calibration.max_f1_drop`` (nothing is written then).
        DataError: If the calibration data cannot be read.
    """
    _openvino("OpenVINO export")
    out = _ir_path(path, overwrite)
    cfg = model.config
    info = export_metadata(model, meta, kind=FORMAT)
    tiles = None
    if int8:  # the extra and the data are checked before the slow conversion
        require("nncf", "openvino", "int8 quantisation with NNCF")
        tiles = read_calibration(
            contract_of(info), Calibration.of(calibration), fixed_size=cfg.input_size
        )
    net = Probabilities(model.cpu().float())
    converted = _convert(net)
    _set_info(converted, info)
    if check:
        runner = OpenVINORunner(converted, device="cpu", precision="fp32")
        check_against_torch(net, runner, cfg.input_size, cfg.in_channels, "OpenVINO IR")
    if tiles is not None:
        converted = _quantized(converted, tiles)
    with staged([out, out.with_suffix(".bin")], overwrite=overwrite) as (xml, _):
        _save(converted, xml)
    return out


def _quantized(fp32: Any, tiles: CalibrationSet) -> Any:
    """The int8 model of ``fp32``, its cost measured and recorded, or refused."""
    info = {**_info_of(fp32, "the fp32 model"), "precision": "int8"}
    info.pop(WEIGHTS_DIGEST, None)  # the fp32 .bin's; the int8 one is recorded when saved
    int8 = quantize_openvino_model(fp32, tiles.inputs)
    _set_info(int8, info)
    reference = OpenVINORunner(fp32, device="cpu", precision="fp32")
    cost = measure_cost(OpenVINORunner(int8, device="cpu"), reference, tiles, "nncf")
    check_cost(cost)
    _set_info(int8, {**info, "quantization": cost.to_dict()})
    return int8


def quantize_openvino(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    calibration: Calibration | str | os.PathLike[str],
    overwrite: bool = False,
) -> Path:
    """Quantise an fp32 OpenVINO IR of dsifn to int8, as ``export_openvino(int8=True)`` does.

    Args:
        source: An fp32 ``.xml`` written by :func:`export_openvino`.
        path: The int8 ``.xml`` to write (its ``.bin`` beside it).
        calibration: Where the calibration tiles come from (or a dataset folder).
        overwrite: Replace existing files.

    Returns:
        The ``.xml`` written.

    Raises:
        WeightsError: If ``source`` is not an fp32 dsifn IR, or the int8 model loses more F1
            than allowed (nothing is written then).
    """
    out = _ir_path(path, overwrite)
    require("nncf", "openvino", "int8 quantisation with NNCF")
    fp32 = _read_model(source)
    info = _info_of(fp32, str(source))
    if info.get("precision", "fp32") != "fp32":
        raise WeightsError(f"{source} is already {info['precision']}; quantise an fp32 export")
    fixed = info.get("tile_size")
    tiles = read_calibration(
        contract_of(info),
        Calibration.of(calibration),
        fixed_size=None if fixed is None else int(fixed),
    )
    int8 = _quantized(fp32, tiles)
    with staged([out, out.with_suffix(".bin")], overwrite=overwrite) as (xml, _):
        _save(int8, xml)
    return out


def _read_model(path: str | os.PathLike[str]) -> Any:
    """The ``openvino.Model`` of an ``.xml`` and the ``.bin`` beside it, checked to belong together.

    Both files are read once, into memory, and the ``.bin`` is hashed once; the digest the
    ``.xml`` records is compared before OpenVINO reads either, and what OpenVINO reads is the
    bytes that were checked, so a ``.bin`` replaced meanwhile cannot pass the check and then be
    loaded. (What the hashing costs a load: ``benchmarks/RESULTS.md``.)

    Raises:
        WeightsError: If the ``.bin`` is not the one the ``.xml`` was written with (its
            recorded SHA-256 differs), or the files are not a loadable IR.
    """
    ov = _openvino("reading an OpenVINO model")
    file = check_input_file(path, "OpenVINO model")
    weights = file.with_suffix(".bin")
    core = ov.Core()
    try:
        if not weights.is_file():  # OpenVINO says whether the graph needed weights
            return core.read_model(str(file))
        graph = file.read_bytes()
        data = ov.Tensor(ov.Type.u8, [weights.stat().st_size])
        view, size = memoryview(data.data), 0  # the tensor owns the bytes OpenVINO will use
        with weights.open("rb", buffering=0) as stream:
            while size < len(view) and (got := stream.readinto(view[size:])):
                size += got
        recorded = _recorded_digest(graph)
        digest = hashlib.sha256(view[:size]).hexdigest()
        if recorded is not None and recorded != digest:
            raise WeightsError(
                f"{weights} is not the .bin that {file} was written with (its SHA-256 differs "
                "from the one the .xml records): the pair was mixed, or replacing it did not "
                "finish; export the model again"
            )
        return core.read_model(graph.decode("utf-8"), data)
    except (RuntimeError, UnicodeDecodeError) as exc:  # OpenVINO's one error type for bad files
        raise WeightsError(
            f"{file} is not a loadable OpenVINO IR (its .bin must lie beside it): "
            f"{str(exc).splitlines()[0] if str(exc) else exc}"
        ) from exc


def _recorded_digest(graph: bytes) -> str | None:
    """The ``.bin`` digest an IR's ``.xml`` records in its dsifn runtime info, if any.

    IRs written before the digest existed, and files that are not dsifn IRs, record none;
    what else is wrong with them is said when OpenVINO or :func:`_info_of` reads them.
    """
    try:
        entry = ElementTree.fromstring(graph).find(f"rt_info/{METADATA_KEY}")
        info = json.loads(entry.get("value", "")) if entry is not None else None
    except (ElementTree.ParseError, json.JSONDecodeError):
        return None
    value = info.get(WEIGHTS_DIGEST) if isinstance(info, dict) else None
    return None if value is None else str(value)


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``dsifn`` metadata entry of an exported IR, without compiling it.

    Raises:
        WeightsError: If the file is not an OpenVINO IR exported by dsifn.
    """
    return _info_of(_read_model(path), str(path))


def _device_name(device: str, available: Sequence[str]) -> str:
    """OpenVINO's name of a dsifn device: auto and cpu are the CPU; gpu[:N] an Intel GPU."""
    name = device.lower()
    if name in ("auto", "cpu"):
        return "CPU"
    if name == "gpu" or name.startswith("gpu:"):
        index = name.partition(":")[2]
        if index and not index.isdigit():
            raise ConfigError(f"unknown device {device!r} (use auto, cpu, gpu or gpu:N)")
        if not any(d.startswith("GPU") for d in available):
            raise ConfigError(
                f"device {device!r} asked for, but OpenVINO finds no GPU "
                f"(devices: {', '.join(available) or 'none'})"
            )
        return f"GPU.{index}" if index else "GPU"
    raise ConfigError(f"unknown device {device!r} for OpenVINO (use auto, cpu, gpu or gpu:N)")


def performance_config(
    device_name: str = "CPU",
    precision: str = "auto",
    *,
    hint: str = "latency",
    threads: int | None = None,
    streams: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """The OpenVINO properties an :class:`OpenVINORunner` compiles with.

    Args:
        device_name: OpenVINO's device (``"CPU"``, ``"GPU"``...).
        precision: ``"auto"`` (on the CPU: bf16 where it is native, as
            :func:`dsifn.devices.resolve_precision` decides; elsewhere the plugin's default),
            ``"fp32"``, ``"bf16"`` or ``"fp16"``: the precision of what int8 does not cover.
        hint: ``"latency"`` (one request uses all cores) or ``"throughput"``.
        threads: Inference threads; None: OpenVINO's default (the physical cores).
        streams: Parallel streams; None: what the hint chooses.
        extra: Further OpenVINO properties, e.g. ``{"ENABLE_CPU_PINNING": "NO"}``.

    Returns:
        Property names to values, as strings.
    """
    check_choice("hint", hint, get_args(Hint))
    settings = {"PERFORMANCE_HINT": hint.upper()}
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be at least 1; got {threads}")
        settings["INFERENCE_NUM_THREADS"] = str(threads)
    if streams is not None:
        if streams < 1:
            raise ConfigError(f"streams must be at least 1; got {streams}")
        settings["NUM_STREAMS"] = str(streams)
    if device_name == "CPU":
        precision = resolve_precision(precision, torch.device("cpu"))
    else:
        check_choice("precision", precision, ("auto", *_PRECISIONS))
    if precision != "auto":
        settings["INFERENCE_PRECISION_HINT"] = _PRECISIONS[precision]
    settings.update({str(k): str(v) for k, v in (extra or {}).items()})
    return settings


class OpenVINORunner(ExportedRunner):
    """Runs an IR exported by :func:`export_openvino` on OpenVINO (a ``TileRunner``).

    Not thread-safe: one inference request serves every call.

    Args:
        model: The ``.xml`` file (its ``.bin`` beside it), or an ``openvino.Model`` carrying
            dsifn's runtime info.
        device: ``"auto"`` or ``"cpu"`` (the CPU), ``"gpu"`` or ``"gpu:N"`` (an Intel GPU).
        precision: See :func:`performance_config`.
        hint: See :func:`performance_config`.
        threads: See :func:`performance_config`.
        streams: See :func:`performance_config`.
        config: Further OpenVINO properties (:func:`performance_config`'s ``extra``).

    Attributes:
        settings: The properties it was compiled with.
        device_name: OpenVINO's device.
        (and those of :class:`~dsifn.interop.exported.ExportedRunner`.)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        device: str = "auto",
        precision: str = "auto",
        *,
        hint: str = "latency",
        threads: int | None = None,
        streams: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        ov = _openvino("running an OpenVINO model")
        core = ov.Core()
        if isinstance(model, str | os.PathLike):
            where, source = str(model), _read_model(model)
        else:
            where, source = "an in-memory OpenVINO model", model
        super().__init__(_info_of(source, where), where)
        self.device_name = _device_name(device, core.available_devices)
        self.settings = performance_config(
            self.device_name, precision, hint=hint, threads=threads, streams=streams, extra=config
        )
        try:
            self.compiled = core.compile_model(source, self.device_name, self.settings)
        except RuntimeError as exc:
            raise ConfigError(
                f"OpenVINO cannot compile {where} for {self.device_name}: {exc}"
            ) from exc
        self.request = self.compiled.create_infer_request()
        self.outputs = [self.compiled.output(name) for name in self.output_names]

    @property
    def compute_precision(self) -> str | None:
        """What OpenVINO computes in where int8 does not reach (``"bf16"``...), if set."""
        hint = self.settings.get("INFERENCE_PRECISION_HINT")
        return None if hint is None else {v: k for k, v in _PRECISIONS.items()}[hint]

    def _infer(self, t1: np.ndarray, t2: np.ndarray) -> Sequence[np.ndarray]:
        # Inputs are fresh padded arrays (shared, not copied); outputs are copies.
        result = self.request.infer({"t1": t1, "t2": t2}, share_inputs=True)
        return [result[output] for output in self.outputs]

    def _engine(self) -> str:
        return f"openvino, {self.device_name}"
