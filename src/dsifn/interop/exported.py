"""What every exported model shares: the graph it computes, its metadata and a runner base.

An ONNX file (:mod:`dsifn.interop.onnx`) and an OpenVINO IR (:mod:`dsifn.interop.openvino`)
hold the same graph: :class:`Probabilities`, taking ``t1``, ``t2`` (normalised float32
(B, C, H, W), H and W multiples of 16) and returning the change **probabilities** of each of
the network's outputs, finest first, ``prob_stride1`` ... ``prob_stride16`` for DSIFN's five
(:data:`OUTPUT_NAMES`), ``prob_stride1`` alone for a baseline (:func:`output_names`). Each
carries one JSON entry of metadata under the key ``"dsifn"`` (:func:`export_metadata`): the
input contract and threshold, the model configuration with its ``name``, the output names,
its precision (``"fp32"`` or ``"int8"``) and, for int8, the accuracy cost measured when it
was quantised. :class:`ExportedRunner` is what both runners share: the
attributes of a ``TileRunner`` read from that entry, and the checks, padding and cropping of
tiles around the runtime's own call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dsifn._version import __version__
from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.errors import ConfigError, InputError, WeightsError
from dsifn.inference.runner import network_words
from dsifn.models.padding import SIZE_MULTIPLE
from dsifn.models.registry import DEFAULT_MODEL, ChangeNetwork, config_dict, model_config
from dsifn.normalization import Normalization

__all__ = [
    "INPUT_NAMES",
    "METADATA_KEY",
    "OUTPUT_NAMES",
    "STRIDES",
    "ExportedRunner",
    "Probabilities",
    "check_against_torch",
    "contract_of",
    "export_metadata",
    "output_names",
    "pad_to_multiple",
    "parse_metadata",
    "sample_pair",
]

INPUT_NAMES = ("t1", "t2")
STRIDES = (1, 2, 4, 8, 16)  # DSIFN's outputs; a baseline has the first only
OUTPUT_NAMES = tuple(f"prob_stride{s}" for s in STRIDES)
METADATA_KEY = "dsifn"
FORMAT_VERSION = 2  # 2: model_config records the network's name; outputs as many as it has


def output_names(model: ChangeNetwork) -> tuple[str, ...]:
    """The exported graph's outputs for ``model``: ``prob_stride{s}`` for each of its strides."""
    return tuple(f"prob_stride{s}" for s in model.output_strides)


def _stride(name: str) -> int:
    return int(name.removeprefix("prob_stride"))


class Probabilities(nn.Module):
    """A network with a sigmoid on each of its outputs: what an exported graph computes.

    Made in eval mode, the network with it: exporters that trace it restore the mode they
    find, recursively, so a wrapper in training mode would leave the network in training mode.
    """

    def __init__(self, model: ChangeNetwork) -> None:
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, t1: Tensor, t2: Tensor) -> tuple[Tensor, ...]:
        """(B, 1, H/s, W/s) probabilities of each output stride s, of normalised (B, C, H, W)."""
        return tuple(torch.sigmoid(o) for o in self.model(t1, t2))


def export_metadata(
    model: ChangeNetwork, meta: Mapping[str, Any] | None = None, *, kind: str = "dsifn-onnx"
) -> dict[str, Any]:
    """The JSON-able description stored with an exported model.

    Args:
        model: The exported network.
        meta: Checkpoint metadata (threshold, source...); defaults to ``model.checkpoint_meta``.
        kind: The format's name, ``"dsifn-onnx"`` or ``"dsifn-openvino"``.

    Returns:
        A dictionary (see the module docstring); ``precision`` is ``"fp32"``.
    """
    cfg = model.config
    recorded = dict(model.checkpoint_meta if meta is None else meta)
    norm = cfg.input_normalization
    contract = InputContract.from_meta(recorded, cfg)
    return {
        "format": kind,
        "format_version": FORMAT_VERSION,
        "dsifn_version": __version__,
        "model_config": config_dict(cfg),
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
        "outputs": list(output_names(model)),
        "output_kind": "probabilities",
        "precision": "fp32",
        "meta": recorded,
    }


def parse_metadata(text: str | None, source: str, kind: str) -> dict[str, Any]:
    """The metadata entry of an exported model, checked.

    Args:
        text: The JSON stored under :data:`METADATA_KEY`, or None when there is none.
        source: The model file, for messages.
        kind: The format expected, as in :func:`export_metadata`.

    Raises:
        WeightsError: If there is no entry, it is not JSON, or it is of another format.
    """
    if text is None:
        raise WeightsError(f"{source} was not exported by dsifn (no {METADATA_KEY!r} metadata)")
    try:
        info = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{source} has unreadable dsifn metadata: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != kind:
        raise WeightsError(f"{source} has dsifn metadata of an unknown format")
    return info


def contract_of(info: Mapping[str, Any]) -> InputContract:
    """The input contract an export's metadata records (older exports: as old checkpoints).

    Raises:
        WeightsError: If the metadata is malformed.
    """
    meta = info.get("meta", {})
    recorded = info.get(CONTRACT_KEY)
    source = {**meta, CONTRACT_KEY: recorded} if recorded is not None else meta
    try:
        config = model_config(info["model_config"], "model_config")
        return InputContract.from_meta(source, config)
    except ConfigError as exc:
        raise WeightsError(f"the model's dsifn metadata is malformed: {exc}") from exc


def sample_pair(
    bands: int, height: int, width: int, batch: int = 2, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """A seeded random pair of (batch, bands, height, width) inputs, to trace and check with."""
    generator = torch.Generator().manual_seed(seed)
    t1, t2 = (torch.randn(batch, bands, height, width, generator=generator) for _ in "ab")
    return t1, t2


def pad_to_multiple(x: np.ndarray, multiple: int = SIZE_MULTIPLE) -> np.ndarray:
    """float32 (B, C, h, w) padded at the bottom and right by reflection, as the networks pad."""
    height, width = x.shape[-2:]
    pad = ((0, 0), (0, 0), (0, -height % multiple), (0, -width % multiple))
    return np.pad(np.asarray(x, dtype=np.float32), pad, mode="reflect")


class ExportedRunner:
    """The part of a ``TileRunner`` that an exported model's metadata and tiles make.

    A runtime's runner calls :meth:`__init__` with the metadata it read and implements
    :meth:`_infer` (padded, normalised inputs to the graph's outputs) and :meth:`_engine`.

    Attributes:
        model_name: The network's ``model.name`` (``"dsifn"``, ``"fc_siam_diff"``...).
        output_names: The graph's outputs, finest first (``prob_stride1``...).
        in_channels: Bands per date.
        tile_size: Fixed tile side (``"keras"`` variant), else None.
        normalization: To apply to [0, 1] images before calling.
        threshold: Decision threshold recorded at export.
        meta: The checkpoint metadata recorded at export.
        contract: The input contract recorded at export.
        precision: ``"fp32"`` or ``"int8"``: how the weights are stored.
        info: The whole ``dsifn`` metadata entry.
        path: The model file.
    """

    def __init__(self, info: dict[str, Any], path: str) -> None:
        self.info = info
        self.path = path
        norm = info["normalization"]
        self.normalization = Normalization(
            tuple(norm["mean"]), tuple(norm["std"]), norm["scale"], norm["reverse_bands"]
        )
        self.in_channels: int = int(info["in_channels"])
        size = info.get("tile_size")
        self.tile_size: int | None = None if size is None else int(size)
        self.meta: dict[str, Any] = dict(info.get("meta", {}))
        self.contract = contract_of(info)
        self.threshold: float = self.contract.threshold
        self.multiple = int(info.get("size_multiple", SIZE_MULTIPLE))
        self.precision: str = str(info.get("precision", "fp32"))
        self.model_name = str(info.get("model_config", {}).get("name", DEFAULT_MODEL))
        self.output_names = tuple(str(n) for n in info.get("outputs", OUTPUT_NAMES))

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
        """Every output's probability map, finest first: (B, 1, ceil(h/s), ceil(w/s)) each."""
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
        a, b = pad_to_multiple(t1, self.multiple), pad_to_multiple(t2, self.multiple)
        outputs = self._infer(a, b)
        return [
            np.ascontiguousarray(out[..., : -(-height // stride), : -(-width // stride)])
            for stride, out in zip(map(_stride, self.output_names), outputs, strict=True)
        ]

    def _infer(self, t1: np.ndarray, t2: np.ndarray) -> Sequence[np.ndarray]:
        """The graph's outputs (:attr:`output_names`) for padded inputs (the runtime's call)."""
        raise NotImplementedError

    def _engine(self) -> str:
        """The runtime and where it runs, for :meth:`describe`."""
        raise NotImplementedError

    def describe(self) -> str:
        """Short description for output metadata."""
        words = network_words(self.model_name, self.info.get("model_config", {}))
        return f"{words} ({self._engine()}, {self.precision})"


def check_against_torch(
    net: nn.Module, runner: ExportedRunner, size: int | None, bands: int, what: str
) -> None:
    """Run an exported graph at a size other than the traced one and compare it with PyTorch.

    Args:
        net: The :class:`Probabilities` that was exported.
        runner: The exported model, loaded to run in fp32.
        size: The model's fixed side, or None.
        bands: Bands per date.
        what: The format, for the message (``"ONNX graph"``).

    Raises:
        WeightsError: If any output differs by more than 1e-4.
    """
    height, width = (size, size) if size else (3 * SIZE_MULTIPLE, 2 * SIZE_MULTIPLE)
    t1, t2 = sample_pair(bands, height, width, batch=1, seed=1)
    with torch.no_grad():
        expected = net(t1, t2)[0].numpy()
    got = runner(t1.numpy(), t2.numpy())
    gap = float(np.abs(got - expected).max())
    if not gap <= 1e-4:
        raise WeightsError(f"the exported {what} differs from PyTorch by {gap:.2e}")
