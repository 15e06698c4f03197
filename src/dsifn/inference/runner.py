"""Tile runners: the one interface through which prediction, evaluation and benchmarks run a model.

Code that runs a model talks to it only through the :class:`TileRunner` protocol, so a PyTorch
checkpoint (:class:`TorchRunner`), an exported ONNX model (``dsifn.interop.onnx.OnnxRunner``,
the ``onnx`` extra) and an OpenVINO IR (``dsifn.interop.openvino.OpenVINORunner``, the
``openvino`` extra), in fp32 or int8, are interchangeable; :mod:`dsifn.inference.loading`
turns a model file into one. Every runner carries the model's
:class:`~dsifn.contract.InputContract`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from dsifn.contract import DEFAULT_THRESHOLD, InputContract
from dsifn.devices import autocast, resolve_device, resolve_precision
from dsifn.errors import ConfigError, InputError
from dsifn.inference.fast import FastInferenceModel, optimize_for_inference
from dsifn.models.decoder import Descriptors
from dsifn.models.dsifn import DSIFN
from dsifn.models.registry import MODELS, ChangeNetwork, entry_of
from dsifn.normalization import Normalization

__all__ = [
    "DEFAULT_THRESHOLD",
    "TileRunner",
    "TorchRunner",
    "describe_network",
    "network_words",
]


@runtime_checkable
class TileRunner(Protocol):
    """A model that maps tile pairs to change probabilities.

    What the input contract carries (band count, normalisation, threshold, the tile size it
    trained on) is read from it; a runner adds only what the contract does not say.

    Attributes:
        contract: How the model's input is made from files (bands, scaling, normalisation,
            threshold...).
        tile_size: Fixed tile side the model requires, or None if it takes any size >= 16.
        meta: Recorded metadata (a checkpoint's ``meta``).
    """

    contract: InputContract
    tile_size: int | None
    meta: dict[str, Any]

    def __call__(self, t1: np.ndarray, t2: np.ndarray) -> np.ndarray:
        """Predict change probabilities.

        Args:
            t1: float32 (B, C, h, w) first-date tiles, already normalised.
            t2: float32 (B, C, h, w) second-date tiles, already normalised.

        Returns:
            float32 (B, 1, h, w) change probabilities in [0, 1].
        """
        ...


class TorchRunner:
    """Runs a network of the package on a device, without gradients, in eval mode.

    A DSIFN's runner can also hold its channel attention fixed (``attention_stages``,
    ``receptive_radius``, :meth:`attention_statistics`: scene-wide attention); a baseline's has
    no such attributes, having no channel attention, and scene-wide attention refuses it.

    Args:
        model: DSIFN or a baseline (moved to ``device`` and set to eval mode).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        precision: ``"auto"``, ``"fp32"``, ``"bf16"`` or ``"fp16"`` (see :mod:`dsifn.devices`).
        meta: Metadata to record; defaults to ``model.checkpoint_meta``.
        fast: Run a copy prepared by :func:`dsifn.inference.fast.optimize_for_inference` (NHWC,
            BatchNorm folded; the same outputs in fp32), not ``model`` as it is.
        compile: Also ``torch.compile`` that copy (worth it for many batches of one size).
    """

    def __init__(
        self,
        model: ChangeNetwork,
        *,
        device: str = "auto",
        precision: str = "auto",
        meta: dict[str, Any] | None = None,
        fast: bool = True,
        compile: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = resolve_precision(precision, self.device)
        self.model = model.to(self.device).eval()
        self.fast: FastInferenceModel | None = None  # the prepared copy, when ``fast``
        if fast:
            self.fast, _ = optimize_for_inference(
                self.model, device=self.device, precision=self.precision, compile=compile
            )
        config = model.config
        self.in_channels: int = config.in_channels
        self.tile_size: int | None = config.input_size
        self.normalization: Normalization = config.input_normalization
        self.meta: dict[str, Any] = dict(model.checkpoint_meta if meta is None else meta)
        self.contract = InputContract.from_meta(self.meta, config)
        self.threshold: float = self.contract.threshold
        self.path: str | None = None  # the checkpoint it came from, for output metadata
        self.model_name = entry_of(model).name  # its model.name
        if isinstance(model, DSIFN):
            # For scene-wide channel attention (dsifn.inference.scene_attention).
            self.attention_stages: tuple[int, ...] = model.attention_stages
            self.receptive_radius: int = model.receptive_radius()

    def __call__(
        self,
        t1: np.ndarray,
        t2: np.ndarray,
        pooled: Mapping[int, Descriptors] | None = None,
    ) -> np.ndarray:
        """Predict change probabilities for (B, C, h, w) float32 tiles; returns (B, 1, h, w).

        ``pooled`` fixes a DSIFN's channel-attention descriptors (see :meth:`DSIFN.forward`).
        """
        a, b = self._tensors(t1, t2)
        with torch.inference_mode(), autocast(self.device, self.precision):
            if self.fast is not None:
                logits = self.fast(a, b, pooled=pooled).stride1
            elif pooled is not None:
                logits = self._dsifn()(a, b, pooled=pooled).stride1
            else:
                logits = self.model(a, b).stride1
            probability = torch.sigmoid(logits.float())
        return probability.cpu().numpy()

    def attention_statistics(
        self,
        t1: np.ndarray,
        t2: np.ndarray,
        stage: int,
        pooled: Mapping[int, Descriptors],
        mask: np.ndarray,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Sums, maxima and count of one attention stage's input over the masked pixels.

        Args:
            t1: float32 (B, C, h, w) first-date tiles, normalised, sides multiples of 16.
            t2: float32 (B, C, h, w) second-date tiles.
            stage: Decoder stage index (one of :attr:`attention_stages`).
            pooled: Descriptors of the earlier stages.
            mask: bool (B, h, w) pixels to count, constant over each cell of the stage's
                stride (the cores of :mod:`dsifn.inference.scene_attention`).

        Returns:
            float64 (C,) channel sums and float32 (C,) channel maxima over the masked cells of
            all tiles (on the CPU), and the number of cells counted.
        """
        a, b = self._tensors(t1, t2)
        with torch.inference_mode(), autocast(self.device, self.precision):
            if self.fast is not None:
                x = self.fast.attention_input(a, b, stage, pooled=pooled)
            else:
                x = self._dsifn().attention_input(a, b, stage, pooled=pooled).float()
            stride = t1.shape[-1] // x.shape[-1]
            cells = torch.from_numpy(np.ascontiguousarray(mask[:, ::stride, ::stride]))
            cells = cells.to(self.device)[:, None]
            total = torch.where(cells, x, 0.0).sum(dim=(0, 2, 3), dtype=torch.float64)
            peak = torch.where(cells, x, -torch.inf).amax(dim=(0, 2, 3))
        return total.cpu(), peak.cpu(), int(cells.sum())

    def _dsifn(self) -> DSIFN:
        if not isinstance(self.model, DSIFN):
            raise ConfigError(f"a {self.describe()} has no channel attention: DSIFN's only")
        return self.model

    def _tensors(self, t1: np.ndarray, t2: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if t1.shape != t2.shape or t1.ndim != 4:
            raise InputError(f"tile batches must match as (B, C, h, w); got {t1.shape}, {t2.shape}")
        a = torch.from_numpy(np.ascontiguousarray(t1, dtype=np.float32)).to(self.device)
        b = torch.from_numpy(np.ascontiguousarray(t2, dtype=np.float32)).to(self.device)
        return a, b

    def describe(self) -> str:
        """Short description for output metadata."""
        return f"{describe_network(self.model)} (torch, {self.precision})"


def describe_network(model: ChangeNetwork) -> str:
    """``"DSIFN pytorch variant, 3 bands"``, ``"FC-Siam-diff, 4 bands"``: a network in words."""
    return network_words(entry_of(model).name, model.config.to_dict())


def network_words(name: str, config: Mapping[str, Any]) -> str:
    """A network in words from its name and recorded configuration (exports have only these)."""
    bands = f"{config.get('in_channels', '?')} bands"
    if name == "dsifn":
        return f"DSIFN {config.get('variant', '?')} variant, {bands}"
    title = MODELS[name].title if name in MODELS else name
    return f"{title}, {bands}"
