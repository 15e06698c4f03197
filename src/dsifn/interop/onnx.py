"""ONNX export of DSIFN and a tile runner on onnxruntime (the ``onnx`` extra).

The exported graph (inputs ``t1``, ``t2``: normalised float32 (B, C, H, W)) returns the five
change **probabilities** (sigmoid applied), finest first, named ``prob_stride1`` ...
``prob_stride16``; each is (B, 1, H/s, W/s). Probabilities, not logits, because an ONNX model
is for deployment and every consumer wants them.

Batch size is dynamic. For the ``"pytorch"`` variant H and W are dynamic too but must be
multiples of 16: the graph has no padding logic (the model's pad-to-16 step depends on the
input size, which would be fixed at export time). :class:`OnnxRunner` pads by reflection as
:class:`~dsifn.models.DSIFN` does and crops, so any size >= 16 works through it. The
``"keras"`` variant takes its fixed size only.

What is needed to use the file sits in its ``metadata_props`` under the key ``"dsifn"``, as
JSON: the input contract (:mod:`dsifn.contract`: bands, scaling, nodata, normalisation, the
tile size it trained on, threshold and rule), model configuration, fixed tile size, size
multiple, output names and the checkpoint's metadata.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dsifn._optional import require
from dsifn._version import __version__
from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.errors import ConfigError, InputError, WeightsError
from dsifn.io.atomic import atomic_path, check_input_file, check_output_path
from dsifn.models.dsifn import DSIFN, SIZE_MULTIPLE, DSIFNConfig
from dsifn.models.normalization import Normalization

__all__ = ["INPUT_NAMES", "METADATA_KEY", "OUTPUT_NAMES", "OnnxRunner", "export_onnx"]

INPUT_NAMES = ("t1", "t2")
OUTPUT_NAMES = tuple(f"prob_stride{s}" for s in (1, 2, 4, 8, 16))
METADATA_KEY = "dsifn"
DEFAULT_OPSET = 18  # the lowest opset the dynamo exporter writes natively


class _Probabilities(nn.Module):
    """DSIFN with a sigmoid on each side output: what the ONNX graph computes."""

    def __init__(self, model: DSIFN) -> None:
        super().__init__()
        self.model = model

    def forward(self, t1: Tensor, t2: Tensor) -> tuple[Tensor, ...]:
        return tuple(torch.sigmoid(o) for o in self.model(t1, t2))


def onnx_metadata(model: DSIFN, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-able description stored with an exported model.

    Args:
        model: The exported network.
        meta: Checkpoint metadata (threshold, source...); defaults to ``model.checkpoint_meta``.

    Returns:
        A dictionary (see the module docstring).
    """
    cfg = model.config
    recorded = dict(model.checkpoint_meta if meta is None else meta)
    norm = cfg.input_normalization
    contract = InputContract.from_meta(recorded, cfg)
    return {
        "format": "dsifn-onnx",
        "format_version": 1,
        "dsifn_version": __version__,
        "model_config": cfg.to_dict(),
        "normalization": {
            "mean": list(norm.mean),
            "std": list(norm.std),
            "scale": norm.scale,
            "reverse_bands": norm.reverse_bands,
        },
        "in_channels": cfg.in_channels,
        "threshold": contract.threshold,
        CONTRACT_KEY: contract.to_dict(),
        "tile_size": cfg.input_size,
        "size_multiple": SIZE_MULTIPLE,
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "output_kind": "probabilities",
        "meta": recorded,
    }


def _export_to(
    module: nn.Module, sample: tuple[Tensor, Tensor], file: Path, opset: int, *, fixed: bool
) -> str:
    """Write the ONNX graph of ``module``; returns which exporter succeeded."""
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
                output_names=list(OUTPUT_NAMES),
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
                    output_names=list(OUTPUT_NAMES),
                    opset_version=opset,
                    dynamic_axes={n: axes for n in (*INPUT_NAMES, *OUTPUT_NAMES)},
                )
        except Exception as exc:
            raise WeightsError(
                f"ONNX export failed with both exporters: dynamo: {dynamo_error}; "
                f"TorchScript: {exc}"
            ) from exc
        return "torchscript"


def export_onnx(
    model: DSIFN,
    path: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    meta: dict[str, Any] | None = None,
    check: bool = True,
) -> Path:
    """Export ``model`` to ONNX, atomically, with its metadata.

    Args:
        model: The network; it is moved to the CPU in float32 and set to eval mode.
        path: The ``.onnx`` file to write (one self-contained file).
        opset: ONNX opset version.
        overwrite: Replace an existing file.
        meta: Metadata to record; defaults to ``model.checkpoint_meta``.
        check: Run the written graph in onnxruntime at a size other than the export sample's
            and compare it with PyTorch (max difference 1e-4) before the file is kept.

    Returns:
        The path written.

    Raises:
        OutputExistsError: If ``path`` exists and ``overwrite`` is false.
        WeightsError: If export fails or the exported graph disagrees with PyTorch.
    """
    onnx = require("onnx", "onnx", "ONNX export")

    if opset < DEFAULT_OPSET:
        raise ConfigError(f"opset must be at least {DEFAULT_OPSET}; got {opset}")
    check_output_path(path, overwrite=overwrite)
    cfg = model.config
    net = _Probabilities(model.cpu().float().eval())
    side = cfg.input_size or 2 * SIZE_MULTIPLE
    generator = torch.Generator().manual_seed(0)
    sample = tuple(torch.randn(2, cfg.in_channels, side, side, generator=generator) for _ in "ab")
    info = onnx_metadata(model, meta)
    with atomic_path(path, overwrite=overwrite) as tmp:
        info["exporter"] = _export_to(
            net, (sample[0], sample[1]), tmp, opset, fixed=cfg.input_size is not None
        )
        graph = onnx.load(str(tmp))
        entry = graph.metadata_props.add()
        entry.key, entry.value = METADATA_KEY, json.dumps(info, default=str)
        graph.producer_name = "dsifn"
        onnx.save(graph, str(tmp))
        if check:
            _check_against_torch(net, tmp, cfg.input_size, cfg.in_channels)
    return Path(path)


def _check_against_torch(net: nn.Module, file: Path, size: int | None, bands: int) -> None:
    runner = OnnxRunner(file, device="cpu")
    height, width = (size, size) if size else (3 * SIZE_MULTIPLE, 2 * SIZE_MULTIPLE)
    generator = torch.Generator().manual_seed(1)
    t1, t2 = (torch.randn(1, bands, height, width, generator=generator) for _ in "ab")
    with torch.no_grad():
        expected = net(t1, t2)[0].numpy()
    got = runner(t1.numpy(), t2.numpy())
    gap = float(np.abs(got - expected).max())
    if not gap <= 1e-4:
        raise WeightsError(f"the exported ONNX graph differs from PyTorch by {gap:.2e}")


def _read_metadata(session: Any, path: Path) -> dict[str, Any]:
    custom = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in custom:
        raise WeightsError(f"{path} was not exported by dsifn (no {METADATA_KEY!r} metadata)")
    try:
        info = json.loads(custom[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{path} has unreadable dsifn metadata: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != "dsifn-onnx":
        raise WeightsError(f"{path} has dsifn metadata of an unknown format")
    return info


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


def _contract(info: dict[str, Any], meta: dict[str, Any]) -> InputContract:
    # Exports record the contract; older ones are read like older checkpoints.
    recorded = info.get(CONTRACT_KEY)
    config = DSIFNConfig.from_dict(info["model_config"])
    source = {**meta, CONTRACT_KEY: recorded} if recorded is not None else meta
    try:
        return InputContract.from_meta(source, config)
    except ConfigError as exc:
        raise WeightsError(f"the model's dsifn metadata is malformed: {exc}") from exc


class OnnxRunner:
    """Runs an ONNX model exported by :func:`export_onnx` on onnxruntime (a ``TileRunner``).

    Args:
        path: The ``.onnx`` file.
        device: ``"auto"`` (CUDA provider when onnxruntime has it), ``"cpu"``, ``"cuda"`` or
            ``"cuda:N"``.

    Attributes:
        in_channels: Bands per date.
        tile_size: Fixed tile side (``"keras"`` variant), else None.
        normalization: To apply to [0, 1] images before calling.
        threshold: Decision threshold recorded at export.
        meta: The checkpoint metadata recorded at export.
        contract: The input contract recorded at export.
        info: The whole ``dsifn`` metadata entry.
    """

    def __init__(self, path: str | os.PathLike[str], device: str = "auto") -> None:
        ort = require("onnxruntime", "onnx", "running an ONNX model")

        file = check_input_file(path, "ONNX model")
        try:
            self.session = ort.InferenceSession(str(file), providers=_providers(device))
        except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
            if isinstance(exc, ConfigError):
                raise
            raise WeightsError(f"{file} is not a loadable ONNX model: {exc}") from exc
        self.path = str(file)
        self.info = _read_metadata(self.session, file)
        norm = self.info["normalization"]
        self.normalization = Normalization(
            tuple(norm["mean"]), tuple(norm["std"]), norm["scale"], norm["reverse_bands"]
        )
        self.in_channels: int = int(self.info["in_channels"])
        size = self.info.get("tile_size")
        self.tile_size: int | None = None if size is None else int(size)
        self.meta: dict[str, Any] = dict(self.info.get("meta", {}))
        self.contract = _contract(self.info, self.meta)
        self.threshold: float = self.contract.threshold
        self.multiple = int(self.info.get("size_multiple", SIZE_MULTIPLE))

    def __call__(self, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        """Predict change probabilities.

        Args:
            t1: float32 (B, C, h, w) first-date tiles, already normalised; h, w >= 16.
            t2: float32 (B, C, h, w) second-date tiles, already normalised.

        Returns:
            float32 (B, 1, h, w) change probabilities.
        """
        return self.run_all(t1, t2)[0]

    def run_all(self, t1: np.ndarray, t2: np.ndarray) -> list[np.ndarray]:
        """All five probability maps, finest first: (B, 1, ceil(h/s), ceil(w/s)) each."""
        if t1.shape != t2.shape or t1.ndim != 4:
            raise InputError(f"tile batches must match as (B, C, h, w); got {t1.shape}, {t2.shape}")
        _, bands, height, width = t1.shape
        if bands != self.in_channels:
            raise InputError(f"expected {self.in_channels} bands per date; got {bands}")
        if self.tile_size is not None and (height, width) != (self.tile_size, self.tile_size):
            raise InputError(
                f"this model takes {self.tile_size}x{self.tile_size} tiles only; "
                f"got {height}x{width}"
            )
        if min(height, width) < self.multiple:
            raise InputError(f"tile sides must be at least {self.multiple}; got {height}x{width}")
        pad = ((0, 0), (0, 0), (0, -height % self.multiple), (0, -width % self.multiple))
        a = np.pad(np.asarray(t1, dtype=np.float32), pad, mode="reflect")
        b = np.pad(np.asarray(t2, dtype=np.float32), pad, mode="reflect")
        outputs = self.session.run(list(OUTPUT_NAMES), {"t1": a, "t2": b})
        crops = []
        for stride, out in zip((1, 2, 4, 8, 16), outputs, strict=True):
            crops.append(
                np.ascontiguousarray(out[..., : -(-height // stride), : -(-width // stride)])
            )
        return crops

    def describe(self) -> str:
        """Short description for output metadata."""
        cfg = self.info.get("model_config", {})
        return (
            f"DSIFN {cfg.get('variant', '?')} variant, {self.in_channels} bands "
            f"(onnxruntime, {self.session.get_providers()[0]})"
        )
