"""Weight conversion: Keras arrays onto a dsifn state dict, layouts and channel orders mapped.

Every array is checked on the way in: its shape after conversion against the target
parameter's, and its values for NaN or infinity. Layers built without a bias, scale or centre
get the value Keras would have used (0 or 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from dsifn.errors import WeightsError
from dsifn.interop.keras_h5.plan import KerasPlan, StagePlan
from dsifn.models.vgg import VGG16_LAYOUT

__all__ = ["KerasLayerWeights", "convert_weights"]

# Arrays of one Keras layer by role ("kernel", "bias", "gamma", "alpha", ...).
KerasLayerWeights = dict[str, np.ndarray]

# Channels of the encoder's five taps, finest first.
_ENCODER_WIDTHS = (64, 128, 256, 512, 512)


def convert_weights(
    plan: KerasPlan, weights: Mapping[str, KerasLayerWeights], reference: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Map Keras arrays onto a dsifn state dict, converting layouts and checking shapes.

    Args:
        plan: From :func:`~dsifn.interop.keras_h5.plan_from_config`.
        weights: Arrays by layer name; the encoder's by ``"<encoder>/<conv name>"``.
        reference: State dict of the target :class:`~dsifn.models.DSIFN` (keys and shapes to
            fill).

    Returns:
        A complete state dict for the target model.

    Raises:
        WeightsError: If an array is missing or has the wrong shape.
    """
    state = _StateWriter(weights, reference)
    conv_index = [i for i, m in enumerate(_features_layout()) if m == "conv"]
    for i, name in enumerate(plan.encoder_convs):
        state.conv(f"{plan.encoder}/{name}", f"encoder.features.{conv_index[i]}")
    previous: int | None = None  # channels of the previous stage's state
    for s, stage in enumerate(plan.stages):
        level = len(plan.stages) - 1 - s
        width = _ENCODER_WIDTHS[level]
        widths = {"t1": width, "t2": width, "up": previous or 0}
        _convert_stage(state, s, stage, _concat_permutation(stage.concat_order, widths))
        previous = int(reference[f"stages.{s}.blocks.{len(stage.blocks) - 1}.0.weight"].shape[0])
    return state.complete()


def _convert_stage(state: _StateWriter, s: int, stage: StagePlan, perm: np.ndarray) -> None:
    """Decoder stage ``s`` and the upsampling into stage ``s + 1``; ``perm`` orders inputs."""
    key = f"stages.{s}"
    if stage.attention is not None:
        _convert_channel_attention(state, s, stage.attention, perm)
    for b, (conv_name, prelu, norm) in enumerate(stage.blocks):
        state.conv(conv_name, f"{key}.blocks.{b}.0", in_order=perm if b == 0 else None)
        alpha = state.get(prelu, "alpha")
        if alpha.ndim != 3:
            raise WeightsError(f"PReLU {prelu!r} has slopes of shape {alpha.shape}")
        state.put(f"{key}.blocks.{b}.1.weight", alpha.transpose(2, 0, 1), f"{prelu}/alpha")
        state.batchnorm(norm, f"{key}.blocks.{b}.2")
    swap = None if stage.spatial_order == ("mean", "max") else [1, 0]
    state.conv(stage.spatial_conv, f"{key}.spatial_attention.conv", in_order=swap)
    if stage.norm is not None:
        state.batchnorm(stage.norm, f"{key}.norm")
    state.conv(stage.head, f"heads.{s}")
    if stage.up is not None:
        state.conv(stage.up, f"stages.{s + 1}.up")


def _convert_channel_attention(
    state: _StateWriter, s: int, dense: tuple[str, str], perm: np.ndarray
) -> None:
    """The two dense layers as 1x1 convolutions, their channels in dsifn's input order."""
    fc1, fc2 = dense
    k1, k2 = state.get(fc1, "kernel"), state.get(fc2, "kernel")
    if k1.ndim != 2 or k2.ndim != 2:
        raise WeightsError(f"stage {s + 1}: attention dense kernels are not matrices")
    ca = f"stages.{s}.channel_attention"
    if k1.shape[0] != len(perm) or k2.shape[1] != len(perm):
        raise WeightsError(
            f"stage {s + 1}: attention dense kernels {k1.shape}, {k2.shape} do not fit "
            f"{len(perm)} channels"
        )
    state.put(f"{ca}.fc1.weight", k1.T[:, perm, None, None], f"{fc1}/kernel")
    state.put(f"{ca}.fc1.bias", state.get(fc1, "bias", ((k1.shape[1],), 0.0)), f"{fc1}/bias")
    state.put(f"{ca}.fc2.weight", k2.T[perm, :, None, None], f"{fc2}/kernel")
    bias2 = state.get(fc2, "bias", ((k2.shape[1],), 0.0))[perm]
    state.put(f"{ca}.fc2.bias", bias2, f"{fc2}/bias")


class _StateWriter:
    """Fills a state dict like ``reference`` from Keras arrays, one checked tensor at a time."""

    def __init__(
        self, weights: Mapping[str, KerasLayerWeights], reference: Mapping[str, Tensor]
    ) -> None:
        self.weights, self.reference = weights, reference
        self.out: dict[str, Tensor] = {}

    def get(
        self, layer: str, role: str, fill: tuple[tuple[int, ...], float] | None = None
    ) -> np.ndarray:
        """Layer ``layer``'s ``role`` array, or ``fill`` (shape, value) if the layer has none."""
        arrays = self.weights.get(layer, {})
        if role in arrays:
            return np.asarray(arrays[role], dtype=np.float32)
        if fill is not None:  # a layer built without bias / scale / centre
            return np.full(fill[0], fill[1], dtype=np.float32)
        raise WeightsError(f"Keras layer {layer!r} has no {role!r} weights")

    def put(self, key: str, value: np.ndarray, source: str) -> None:
        """Set parameter ``key`` from an array converted from Keras weights ``source``."""
        target = self.reference.get(key)
        if target is None:
            raise WeightsError(f"internal: dsifn has no parameter {key!r}")
        if tuple(value.shape) != tuple(target.shape):
            raise WeightsError(
                f"Keras weights {source} have shape {value.shape} (converted), but dsifn's "
                f"{key} needs {tuple(target.shape)}"
            )
        if not np.isfinite(value).all():
            raise WeightsError(f"Keras weights {source} hold NaN or infinite values")
        self.out[key] = torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype)

    def conv(self, layer: str, key: str, in_order: np.ndarray | list[int] | None = None) -> None:
        """A (transposed) convolution, its input channels taken in ``in_order`` if given."""
        kernel = self.get(layer, "kernel")
        if kernel.ndim != 4:
            raise WeightsError(f"Keras layer {layer!r} kernel has shape {kernel.shape}")
        # Conv2D (h, w, in, out) -> (out, in, h, w); Conv2DTranspose (h, w, out, in) ->
        # (in, out, h, w): the same axis order, and no spatial flip (the parity test checks).
        w = kernel.transpose(3, 2, 0, 1)
        if in_order is not None:
            w = w[:, in_order]
        self.put(f"{key}.weight", w, f"{layer}/kernel")
        if f"{key}.bias" in self.reference:
            bias = self.get(layer, "bias", ((self.reference[f"{key}.bias"].shape[0],), 0.0))
            self.put(f"{key}.bias", bias, f"{layer}/bias")

    def batchnorm(self, layer: str, key: str) -> None:
        """A BatchNorm's scale, shift and running statistics."""
        shape = tuple(self.reference[f"{key}.weight"].shape)
        self.put(f"{key}.weight", self.get(layer, "gamma", (shape, 1.0)), f"{layer}/gamma")
        self.put(f"{key}.bias", self.get(layer, "beta", (shape, 0.0)), f"{layer}/beta")
        for stat, role in (("running_mean", "moving_mean"), ("running_var", "moving_variance")):
            self.put(f"{key}.{stat}", self.get(layer, role), f"{layer}/{role}")
        self.out[f"{key}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)

    def complete(self) -> dict[str, Tensor]:
        """The state dict, once every parameter of ``reference`` is set."""
        missing = sorted(set(self.reference) - set(self.out))
        if missing:
            raise WeightsError(f"the Keras file does not provide dsifn's {missing[0]} (and others)")
        return self.out


def _concat_permutation(order: Sequence[str], widths: Mapping[str, int]) -> np.ndarray:
    """Indices into the file's concatenated channels giving dsifn's (up, t1, t2) order."""
    start, offsets = 0, {}
    for source in order:
        offsets[source] = start
        start += widths[source]
    ours = [s for s in ("up", "t1", "t2") if s in order]
    return np.concatenate([offsets[s] + np.arange(widths[s]) for s in ours])


def _features_layout() -> list[str]:
    """Kind of each module of ``VGG16Encoder.features``: conv, relu, pool."""
    kinds: list[str] = []
    for item in VGG16_LAYOUT:
        kinds += ["pool"] if item == "M" else ["conv", "relu"]
    return kinds
