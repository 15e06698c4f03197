"""The DSIFN network in Keras 3 (``keras.ops`` only) and weight transfer from PyTorch.

Zhang et al., ISPRS J. P&RS 166, 2020. Same structure and configuration as
:class:`dsifn.models.DSIFN` (both variants), channels-last. Layer names are fixed here
(``encoder/conv{i}``, ``stage{i}_block{j}_conv``, ``head{i}``...) so that
:func:`transfer_weights` maps PyTorch modules onto them by name.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import keras
import numpy as np
import torch
from keras import layers, ops

from dsifn.errors import ConfigError, WeightsError
from dsifn.models.decoder import ElementwisePReLU, decoder_widths
from dsifn.models.dsifn import DSIFN, DSIFNConfig
from dsifn.models.vgg import VGG16_LAYOUT

__all__ = ["build_keras_model", "keras_model_from_checkpoint", "transfer_weights"]

_TAPS = 5  # VGG16 taps, strides 1 .. 16


@keras.saving.register_keras_serializable(package="dsifn")
class ChannelAttention(layers.Layer):  # type: ignore[misc]
    """CBAM channel attention (Woo et al., ECCV 2018) on (B, H, W, C) input."""

    def __init__(self, channels: int, use_bias: bool, reduction: int = 8, **kwargs: Any) -> None:
        """Create the shared two-layer MLP."""
        super().__init__(**kwargs)
        self.channels, self.use_bias, self.reduction = channels, use_bias, reduction
        hidden = max(channels // reduction, 1)
        self.fc1 = layers.Dense(hidden, activation="relu", use_bias=use_bias, name="fc1")
        self.fc2 = layers.Dense(channels, use_bias=use_bias, name="fc2")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Create the MLP's weights."""
        self.fc1.build((None, self.channels))
        self.fc2.build((None, self.fc1.units))

    def call(self, x: Any) -> Any:
        """Reweight the channels of (B, H, W, C) input."""
        avg = self.fc2(self.fc1(ops.mean(x, axis=(1, 2))))
        peak = self.fc2(self.fc1(ops.max(x, axis=(1, 2))))
        weight = ops.sigmoid(avg + peak)  # (B, C)
        return x * weight[:, None, None, :]

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments, for saving."""
        config: dict[str, Any] = super().get_config()
        config.update(channels=self.channels, use_bias=self.use_bias, reduction=self.reduction)
        return config


@keras.saving.register_keras_serializable(package="dsifn")
class SpatialAttention(layers.Layer):  # type: ignore[misc]
    """CBAM spatial attention: 7x7 convolution over per-pixel channel [mean, max]."""

    def __init__(self, **kwargs: Any) -> None:
        """Create the 2 -> 1 convolution."""
        super().__init__(**kwargs)
        self.conv = layers.Conv2D(1, 7, padding="same", use_bias=False, name="conv")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Create the convolution's weights."""
        self.conv.build((None, None, None, 2))

    def call(self, x: Any) -> Any:
        """Reweight the pixels of (B, H, W, C) input."""
        pooled = ops.concatenate(
            [ops.mean(x, axis=-1, keepdims=True), ops.max(x, axis=-1, keepdims=True)], axis=-1
        )
        return x * ops.sigmoid(self.conv(pooled))


def _encoder(in_channels: int, size: int | None, name: str) -> keras.Model:
    """The VGG16 encoder up to conv5_3's ReLU, returning the five taps finest first."""
    image = keras.Input((size, size, in_channels))
    x, taps, index = image, [], 0
    for item in VGG16_LAYOUT:
        if item == "M":
            taps.append(x)
            x = layers.MaxPooling2D(2, name=f"pool{len(taps)}")(x)
        else:
            x = layers.Conv2D(int(item), 3, padding="same", activation="relu", name=f"conv{index}")(
                x
            )
            index += 1
    taps.append(x)
    return keras.Model(image, taps, name=name)


def build_keras_model(config: DSIFNConfig | None = None, **options: Any) -> keras.Model:
    """Build DSIFN as a Keras functional model with fresh weights.

    Args:
        config: Configuration as for :class:`dsifn.models.DSIFN`. ``encoder_weights`` is
            ignored (weights come from :func:`transfer_weights`).
        **options: Fields of :class:`~dsifn.models.DSIFNConfig` overriding ``config``'s.

    Returns:
        A model taking ``[t1, t2]`` (B, H, W, C) and returning five logit maps, finest first,
        (B, H/s, W/s, 1). H and W must be multiples of 16; the ``"keras"`` variant takes
        ``input_size`` only.
    """
    base = config if config is not None else DSIFNConfig()
    cfg = dataclasses.replace(base, **options) if options else base
    keras_variant = cfg.variant == "keras"
    size = cfg.input_size
    shape = (size, size, cfg.in_channels)
    t1, t2 = keras.Input(shape, name="t1"), keras.Input(shape, name="t2")
    encoder = _encoder(cfg.in_channels, size, "encoder")
    encoder.trainable = not cfg.freeze_encoder
    encoder_t2 = encoder
    if not cfg.shared_encoder:
        encoder_t2 = _encoder(cfg.in_channels, size, "encoder_t2")
        encoder_t2.trainable = not cfg.freeze_encoder
    feats1, feats2 = encoder(t1), encoder_t2(t2)

    enc_channels = (64, 128, 256, 512, 512)
    shared_axes = {"layer": [1, 2, 3], "channel": [1, 2], "element": None}[cfg.prelu]
    epsilon, momentum = (1e-3, 0.99) if keras_variant else (1e-5, 0.9)
    logits = []
    state = None
    for i, widths in enumerate(decoder_widths(enc_channels)):
        level = _TAPS - 1 - i
        parts = [feats1[level], feats2[level]]
        if state is not None:
            up = layers.Conv2DTranspose(state.shape[-1], 2, strides=2, name=f"stage{i}_up")
            parts.insert(0, up(state))
        x = layers.Concatenate(axis=-1, name=f"stage{i}_concat")(parts)
        if i > 0 or cfg.stage1_channel_attention:
            x = ChannelAttention(x.shape[-1], use_bias=keras_variant, name=f"stage{i}_ca")(x)
        for j, width in enumerate(widths):
            prefix = f"stage{i}_block{j}"
            x = layers.Conv2D(width, 3, padding="same", name=f"{prefix}_conv")(x)
            x = layers.PReLU(shared_axes=shared_axes, name=f"{prefix}_prelu")(x)
            x = layers.BatchNormalization(epsilon=epsilon, momentum=momentum, name=f"{prefix}_bn")(
                x
            )
            x = layers.Dropout(cfg.dropout, name=f"{prefix}_dropout")(x)
        x = SpatialAttention(name=f"stage{i}_sa")(x)
        if not (keras_variant and i == _TAPS - 1):
            x = layers.BatchNormalization(epsilon=epsilon, momentum=momentum, name=f"stage{i}_bn")(
                x
            )
        state = x
        logits.append(layers.Conv2D(1, 1, name=f"stride{2**level}")(x))
    return keras.Model([t1, t2], logits[::-1], name=f"dsifn_{cfg.variant}")


def _conv(weight: Any) -> np.ndarray:
    # torch (out, in, h, w) -> Keras (h, w, in, out); for transposed convolutions torch
    # (in, out, h, w) -> Keras (h, w, out, in): the same axis order.
    return np.ascontiguousarray(_numpy(weight).transpose(2, 3, 1, 0))


def _numpy(tensor: Any) -> np.ndarray:
    return np.asarray(tensor.detach().cpu().numpy(), dtype=np.float32)


def _set(layer: Any, values: list[np.ndarray]) -> None:
    expected = [tuple(w.shape) for w in layer.weights]
    got = [tuple(v.shape) for v in values]
    if expected != got:
        raise ConfigError(f"Keras layer {layer.name!r} needs weights {expected}; got {got}")
    layer.set_weights(values)


def transfer_weights(torch_model: DSIFN, keras_model: keras.Model) -> keras.Model:
    """Copy a :class:`DSIFN`'s weights into a model from :func:`build_keras_model`.

    Args:
        torch_model: The source network.
        keras_model: Built with the same configuration.

    Returns:
        ``keras_model``, with the weights set.

    Raises:
        ConfigError: If a weight's shape does not fit (the configurations differ).
    """
    net = torch_model
    encoders = [keras_model.get_layer("encoder")]
    if net.encoder_t2 is not None:
        encoders.append(keras_model.get_layer("encoder_t2"))
    for source, target in zip(net.encoders, encoders, strict=True):
        convs = [m for m in source.features if isinstance(m, torch.nn.Conv2d)]
        for index, conv in enumerate(convs):
            _set(target.get_layer(f"conv{index}"), [_conv(conv.weight), _numpy(conv.bias)])
    stages: list[Any] = list(net.stages)  # DecoderStage modules
    heads: list[Any] = list(net.heads)
    for i, (stage, head) in enumerate(zip(stages, heads, strict=True)):
        if stage.up is not None:
            _set(
                keras_model.get_layer(f"stage{i}_up"),
                [_conv(stage.up.weight), _numpy(stage.up.bias)],
            )
        if stage.channel_attention is not None:
            ca = keras_model.get_layer(f"stage{i}_ca")
            for name in ("fc1", "fc2"):
                module = getattr(stage.channel_attention, name)
                values = [_numpy(module.weight)[:, :, 0, 0].T]
                if module.bias is not None:
                    values.append(_numpy(module.bias))
                _set(getattr(ca, name), values)
        for j, block in enumerate(stage.blocks):
            conv, act, norm = block[0], block[1], block[2]
            prefix = f"stage{i}_block{j}"
            _set(keras_model.get_layer(f"{prefix}_conv"), [_conv(conv.weight), _numpy(conv.bias)])
            slope = _numpy(act.weight)
            prelu = keras_model.get_layer(f"{prefix}_prelu")
            if isinstance(act, ElementwisePReLU):
                slope = slope.transpose(1, 2, 0)  # (C, H, W) -> (H, W, C)
            else:
                slope = slope.reshape(prelu.weights[0].shape)  # one slope, or one per channel
            _set(prelu, [slope])
            _set(keras_model.get_layer(f"{prefix}_bn"), _batchnorm(norm))
        _set(
            keras_model.get_layer(f"stage{i}_sa").conv, [_conv(stage.spatial_attention.conv.weight)]
        )
        if stage.norm is not None:
            _set(keras_model.get_layer(f"stage{i}_bn"), _batchnorm(stage.norm))
        level = len(net.stages) - 1 - i
        _set(keras_model.get_layer(f"stride{2**level}"), [_conv(head.weight), _numpy(head.bias)])
    return keras_model


def _batchnorm(norm: Any) -> list[np.ndarray]:
    return [
        _numpy(norm.weight),
        _numpy(norm.bias),
        _numpy(norm.running_mean),
        _numpy(norm.running_var),
    ]


def keras_model_from_checkpoint(path: str | os.PathLike[str]) -> keras.Model:
    """Build the Keras model of a dsifn checkpoint, with its weights.

    Args:
        path: A dsifn checkpoint (``dsifn train`` or ``dsifn convert``).

    Returns:
        The Keras model (see :func:`build_keras_model` for inputs and outputs).

    Raises:
        WeightsError: If the checkpoint holds another network than DSIFN.
    """
    from dsifn.models.checkpoint import load_checkpoint

    model = load_checkpoint(path)
    if not isinstance(model, DSIFN):
        raise WeightsError(
            f"{path} holds a {type(model).__name__}: the Keras 3 model is DSIFN's only "
            "(export other networks to ONNX or OpenVINO)"
        )
    return transfer_weights(model, build_keras_model(model.config))
