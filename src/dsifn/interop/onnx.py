"""ONNX export of any network, int8 quantisation, and a runner on onnxruntime (``onnx`` extra).

Any network of :mod:`dsifn.models.registry` exports. The graph (:mod:`dsifn.interop.exported`:
inputs ``t1``, ``t2``, normalised float32 (B, C, H, W)) returns the change **probabilities**
(sigmoid applied) of each of the network's outputs, finest first, named ``prob_stride1`` ...
``prob_stride16`` for DSIFN's five and ``prob_stride1`` for a baseline's one; each is
(B, 1, H/s, W/s). Probabilities, not logits, because an ONNX model is for deployment and every
consumer wants them.

Batch size is dynamic. H and W are dynamic too (except for DSIFN's ``"keras"`` variant, which
takes its fixed size only) but must be multiples of 16: the graph has no padding logic (the
model's pad-to-16 step depends on the input size, which would be fixed at export time).
:class:`OnnxRunner` pads by reflection as the networks do and crops, so any size >= 16 works
through it.

``int8=True`` (or :func:`quantize_onnx` on an fp32 export) quantises the graph with
onnxruntime's static QDQ quantisation on calibration tiles of a dataset
(:mod:`dsifn.interop.quantize`), measures what it costs on held-out tiles and refuses a model
that loses too much F1; nothing is written then.

What is needed to use the file sits in its ``metadata_props`` under the key ``"dsifn"``, as
JSON: the input contract (:mod:`dsifn.contract`: bands, scaling, nodata, normalisation, the
tile size it trained on, threshold and rule), model configuration, fixed tile size, size
multiple, output names, precision, the accuracy cost of int8 and the checkpoint's metadata.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dsifn._optional import require
from dsifn.errors import ConfigError, WeightsError
from dsifn.interop.exported import (
    INPUT_NAMES,
    METADATA_KEY,
    OUTPUT_NAMES,
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
    quantize_onnx_file,
    read_calibration,
)
from dsifn.io.atomic import atomic_path, check_input_file, check_output_path
from dsifn.models.padding import SIZE_MULTIPLE
from dsifn.models.registry import ChangeNetwork

__all__ = [
    "INPUT_NAMES",
    "METADATA_KEY",
    "OUTPUT_NAMES",
    "OnnxRunner",
    "export_onnx",
    "quantize_onnx",
    "read_info",
]

DEFAULT_OPSET = 18  # the lowest opset the dynamo exporter writes natively
FORMAT = "dsifn-onnx"


def _export_to(
    module: Probabilities,
    sample: tuple[Tensor, Tensor],
    file: Path,
    opset: int,
    *,
    fixed: bool,
) -> str:
    """Write the ONNX graph of ``module``; returns which exporter succeeded."""
    outputs = list(output_names(module.model))
    batch = torch.export.Dim("batch", min=1, max=4096)
    if fixed:
        shapes: dict[int, Any] = {0: batch}
    else:
        height = torch.export.Dim("height16", min=1, max=4096)
        width = torch.export.Dim("width16", min=1, max=4096)
        shapes = {0: batch, 2: SIZE_MULTIPLE * height, 3: SIZE_MULTIPLE * width}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's chatter about axis names
            program = torch.onnx.export(
                module,
                sample,
                dynamo=True,
                input_names=list(INPUT_NAMES),
                output_names=outputs,
                opset_version=opset,
                dynamic_shapes={name: shapes for name in INPUT_NAMES},
                verbose=False,
            )
        assert program is not None
        program.save(file, external_data=False)
        return "dynamo"
    except Exception as dynamo_error:  # fall back to the TorchScript exporter
        axes = {0: "batch"} if fixed else {0: "batch", 2: "height", 3: "width"}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    sample,
                    file,
                    dynamo=False,
                    input_names=list(INPUT_NAMES),
                    output_names=outputs,
                    opset_version=opset,
                    dynamic_axes={n: axes for n in (*INPUT_NAMES, *outputs)},
                )
        except Exception as exc:
            raise WeightsError(
                f"ONNX export failed with both exporters: dynamo: {dynamo_error}; "
                f"TorchScript: {exc}"
            ) from exc
        return "torchscript"


def _write_metadata(file: Path, info: dict[str, Any]) -> None:
    """Store ``info`` as the file's ``dsifn`` metadata entry (replacing one there)."""
    onnx = require("onnx", "onnx", "ONNX export")
    graph = onnx.load(str(file))
    kept = [p for p in graph.metadata_props if p.key != METADATA_KEY]
    del graph.metadata_props[:]
    graph.metadata_props.extend(kept)
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(info, default=str)
    graph.producer_name = "dsifn"
    onnx.save(graph, str(file))


def _export_fp32(
    net: Probabilities, info: dict[str, Any], file: Path, opset: int, check: bool
) -> None:
    """Write the fp32 graph of ``net`` with ``info``; compare it with PyTorch if ``check``."""
    cfg = net.model.config
    side = cfg.input_size or 2 * SIZE_MULTIPLE
    sample = sample_pair(cfg.in_channels, side, side)
    info["exporter"] = _export_to(net, sample, file, opset, fixed=cfg.input_size is not None)
    _write_metadata(file, info)
    if check:
        runner = OnnxRunner(file, device="cpu")
        check_against_torch(net, runner, cfg.input_size, cfg.in_channels, "ONNX graph")


def export_onnx(
    model: ChangeNetwork,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    meta: dict[str, Any] | None = None,
    check: bool = True,
    int8: bool = False,
    calibration: Calibration | str | os.PathLike[str] | None = None,
) -> Path:
    """Export ``model`` to ONNX, atomically, with its metadata; in int8 if asked.

    Args:
        model: Any network of the package; it is moved to the CPU in float32 and set to eval
            mode.
        path: The ``.onnx`` file to write (one self-contained file).
        opset: ONNX opset version.
        overwrite: Replace an existing file.
        meta: Metadata to record; defaults to ``model.checkpoint_meta``.
        check: Run the fp32 graph in onnxruntime at a size other than the export sample's
            and compare it with PyTorch (max difference 1e-4) before going on.
        int8: Quantise the graph (static QDQ, per-channel weights) on calibration tiles.
        calibration: Where the tiles come from (a :class:`~dsifn.interop.quantize.Calibration`
            or a dataset folder, read with its defaults); needed by ``int8``.

    Returns:
        The path written.

    Raises:
        OutputExistsError: If ``path`` exists and ``overwrite`` is false.
        WeightsError: If export fails, the graph disagrees with PyTorch, or the int8 model
            loses more F1 than ``calibration.max_f1_drop`` (nothing is written then).
        DataError: If the calibration data cannot be read.
    """
    require("onnx", "onnx", "ONNX export")
    if opset < DEFAULT_OPSET:
        raise ConfigError(f"opset must be at least {DEFAULT_OPSET}; got {opset}")
    check_output_path(path, overwrite=overwrite)
    if check or int8:
        require("onnxruntime", "onnx", "running the exported ONNX graph")
    cfg = model.config
    info = export_metadata(model, meta, kind=FORMAT)
    tiles = None
    if int8:  # the data is read (and refused) before the slow export
        tiles = read_calibration(
            contract_of(info), Calibration.of(calibration), fixed_size=cfg.input_size
        )
    net = Probabilities(model.cpu().float())
    with atomic_path(path, overwrite=overwrite) as tmp:
        if tiles is None:
            _export_fp32(net, info, tmp, opset, check)
        else:
            with tempfile.TemporaryDirectory(prefix=".dsifn-fp32-", dir=tmp.parent) as work:
                fp32 = Path(work) / "fp32.onnx"
                _export_fp32(net, info, fp32, opset, check)
                _quantize_into(fp32, tmp, tiles)
    return Path(path)


def _quantize_into(fp32: Path, target: Path, tiles: CalibrationSet) -> None:
    """Quantise ``fp32`` into ``target``, measure, refuse or record the cost."""
    quantize_onnx_file(fp32, target, tiles.inputs)
    reference = OnnxRunner(fp32, device="cpu")
    cost = measure_cost(OnnxRunner(target, device="cpu"), reference, tiles, "onnxruntime-qdq")
    check_cost(cost)
    _write_metadata(target, {**reference.info, "precision": "int8", "quantization": cost.to_dict()})


def quantize_onnx(
    source: str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    calibration: Calibration | str | os.PathLike[str],
    overwrite: bool = False,
) -> Path:
    """Quantise an fp32 ONNX export of dsifn to int8, as ``export_onnx(int8=True)`` does.

    Args:
        source: An fp32 ``.onnx`` written by :func:`export_onnx`.
        path: The int8 ``.onnx`` to write.
        calibration: Where the calibration tiles come from (or a dataset folder).
        overwrite: Replace an existing file.

    Returns:
        The path written.

    Raises:
        WeightsError: If ``source`` is not an fp32 dsifn export, or the int8 model loses
            more F1 than allowed (nothing is written then).
    """
    check_output_path(path, overwrite=overwrite)
    reference = OnnxRunner(source, device="cpu")
    if reference.precision != "fp32":
        raise WeightsError(f"{source} is already {reference.precision}; quantise an fp32 export")
    tiles = read_calibration(
        reference.contract, Calibration.of(calibration), fixed_size=reference.tile_size
    )
    with atomic_path(path, overwrite=overwrite) as tmp:
        _quantize_into(Path(source), tmp, tiles)
    return Path(path)


def read_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``dsifn`` metadata entry of an exported ONNX model, without running it.

    Raises:
        WeightsError: If the file is not an ONNX model exported by dsifn.
    """
    onnx = require("onnx", "onnx", "reading an ONNX model")
    file = check_input_file(path, "ONNX model", WeightsError)
    try:
        graph = onnx.load(str(file), load_external_data=False)
    except Exception as exc:  # protobuf's decode errors have no common base to name
        raise WeightsError(f"{file} is not an ONNX model: {exc}") from exc
    props = {p.key: p.value for p in graph.metadata_props}
    return parse_metadata(props.get(METADATA_KEY), str(file), FORMAT)


def _providers(device: str) -> list[Any]:
    ort = require("onnxruntime", "onnx", "running an ONNX model")

    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if device == "auto":
        return (
            ["CUDAExecutionProvider", "CPUExecutionProvider"]
            if has_cuda
            else ["CPUExecutionProvider"]
        )
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda" or device.startswith("cuda:"):
        if not has_cuda:
            raise ConfigError(
                f"device {device!r} asked for, but this onnxruntime has no CUDA provider "
                "(install onnxruntime-gpu)"
            )
        index = device.partition(":")[2] or "0"
        if not index.isdigit():
            raise ConfigError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)")
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
    raise ConfigError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)")


class OnnxRunner(ExportedRunner):
    """Runs an ONNX model exported by :func:`export_onnx` on onnxruntime (a ``TileRunner``).

    Args:
        path: The ``.onnx`` file.
        device: ``"auto"`` (CUDA provider when onnxruntime has it), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.
        threads: Threads of one inference (onnxruntime's intra-op threads); None: its
            default, the physical cores.

    Attributes:
        session: The onnxruntime session.
        (and those of :class:`~dsifn.interop.exported.ExportedRunner`.)
    """

    def __init__(
        self, path: str | os.PathLike[str], device: str = "auto", *, threads: int | None = None
    ) -> None:
        ort = require("onnxruntime", "onnx", "running an ONNX model")

        file = check_input_file(path, "ONNX model")
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise ConfigError(f"threads must be at least 1; got {threads}")
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(
                str(file), sess_options=options, providers=_providers(device)
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            if isinstance(exc, ConfigError):
                raise
            raise WeightsError(f"{file} is not a loadable ONNX model: {exc}") from exc
        custom = self.session.get_modelmeta().custom_metadata_map
        super().__init__(parse_metadata(custom.get(METADATA_KEY), str(file), FORMAT), str(file))

    def _infer(self, t1: np.ndarray, t2: np.ndarray) -> Sequence[np.ndarray]:
        outputs: list[np.ndarray] = self.session.run(list(self.output_names), {"t1": t1, "t2": t2})
        return outputs

    def _engine(self) -> str:
        return f"onnxruntime, {self.session.get_providers()[0]}"
