"""DSIFN: the deeply supervised image fusion network for bi-temporal change detection.

Zhang, Yue, Tapete, Jiang, Shangguan, Huang & Liu, "A deeply supervised image fusion network for
change detection in high resolution bi-temporal remote sensing images", ISPRS Journal of
Photogrammetry and Remote Sensing 166:183-200, 2020.

A VGG16 encoder (the paper's DFEN; :class:`~dsifn.models.vgg.VGG16Encoder`) extracts five
feature maps from each date; a decoder (the paper's DDN) of five stages goes from stride 16
back to stride 1, each stage fusing the two dates' features with the decoder state through
channel and spatial attention and emitting a one-channel change map (deep supervision). The
model returns logits; sigmoid and threshold belong to prediction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, NamedTuple, get_args

import torch
from torch import Tensor, nn

from dsifn._config import Config, plain, settle
from dsifn._validation import check_choice
from dsifn.errors import ConfigError, InputError
from dsifn.models.decoder import DecoderStage, Descriptors, PReLUMode, decoder_widths
from dsifn.models.outputs import strides_of
from dsifn.models.padding import SIZE_MULTIPLE, check_pair, crop_to, reflect_pad
from dsifn.models.vgg import VGG16Encoder, load_vgg16_state_dict, torchvision_to_encoder
from dsifn.normalization import CAFFE_BGR, IMAGENET_RGB, Normalization, check_input_bands

__all__ = [
    "DSIFN",
    "DSIFNConfig",
    "DSIFNOutput",
    "decoder_receptive_radius",
]

Variant = Literal["pytorch", "keras"]


@dataclass(frozen=True)
class DSIFNConfig(Config):
    """Everything needed to rebuild a DSIFN. Defaults follow the paper.

    ``variant`` selects where the authors' two published model files differ:
    ``"pytorch"`` (one PReLU slope per layer, bias-free attention MLP, BatchNorm eps 1e-5 and a
    BatchNorm after stage 5's spatial attention) or ``"keras"`` (one PReLU slope per element at a
    fixed ``input_size``, attention MLP with biases, BatchNorm eps 1e-3 and momentum 0.99, no
    BatchNorm after stage 5's spatial attention).
    """

    in_channels: int = 3  # bands of each date's image
    shared_encoder: bool = True  # one VGG16 encoder for both dates (paper, Keras file)
    freeze_encoder: bool = True  # encoder gets no gradient and stays in eval mode
    dropout: float = 0.6  # probability of every decoder Dropout
    stage1_channel_attention: bool = False  # the official code leaves it off
    encoder_weights: str | None = None  # None, "imagenet" or a torchvision-format VGG16 file
    variant: Variant = "pytorch"  # which official file's details to follow
    input_size: int | None = None  # fixed square side; required by (and only for) "keras"
    normalization: Normalization | None = (
        None  # None: the one belonging to the weights (see input_normalization)
    )

    section: ClassVar[str] = "model"
    name: ClassVar[str] = "dsifn"  # the model.name that selects DSIFN (dsifn.models.registry)

    def __post_init__(self) -> None:
        """Check values and resolve the default normalisation."""
        settle(self)
        check_choice("variant", self.variant, get_args(Variant))
        check_input_bands(self.in_channels, self.normalization)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {self.dropout}")
        if self.variant == "keras":
            size = 512 if self.input_size is None else self.input_size
            if size < SIZE_MULTIPLE or size % SIZE_MULTIPLE:
                raise ConfigError(f"input_size must be a multiple of 16; got {size}")
            object.__setattr__(self, "input_size", size)
        elif self.input_size is not None:
            raise ConfigError("input_size is fixed only by the 'keras' variant; leave it None")

    @property
    def input_normalization(self) -> Normalization:
        """The normalisation to apply: the configured one, else the one of the weights.

        ImageNet statistics (torchvision convention) for the ``"pytorch"`` variant and Caffe's
        BGR mean subtraction for ``"keras"``, repeated cyclically when there are not 3 bands.
        """
        if self.normalization is not None:
            return self.normalization
        default = CAFFE_BGR if self.variant == "keras" else IMAGENET_RGB
        return default.for_bands(self.in_channels)

    @property
    def prelu(self) -> PReLUMode:
        """PReLU slope sharing: one per layer (PyTorch file) or per element (Keras default)."""
        return "element" if self.variant == "keras" else "layer"

    def to_dict(self) -> dict[str, Any]:
        """Plain, ``weights_only``-safe dictionary; tuples stay tuples, as checkpoints hold them."""
        out: dict[str, Any] = plain(self, keep_tuples=True)
        return out


class DSIFNOutput(NamedTuple):
    """The five side outputs of DSIFN as logits, finest first. Each is (B, 1, h, w)."""

    stride1: Tensor  # (B, 1, H, W): the change map
    stride2: Tensor  # (B, 1, H/2, W/2)
    stride4: Tensor  # (B, 1, H/4, W/4)
    stride8: Tensor  # (B, 1, H/8, W/8)
    stride16: Tensor  # (B, 1, H/16, W/16)


class DSIFN(nn.Module):
    """The DSIFN change-detection network (Zhang et al., ISPRS J. P&RS 166, 2020).

    Example:
        >>> model = DSIFN(encoder_weights=None)
        >>> out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
        >>> out.stride1.shape
        torch.Size([1, 1, 64, 64])

    Inputs whose sides are not multiples of 16 are padded at the bottom and right by
    reflection up to the next multiple, and every output is cropped back to
    ``ceil(side / stride)``, so output pixel (i, j) at stride s always covers input pixels
    [i*s, (i+1)*s) x [j*s, (j+1)*s). The ``"keras"`` variant takes only its fixed input size.
    """

    output_strides: ClassVar[tuple[int, ...]] = strides_of(DSIFNOutput)  # (1, 2, 4, 8, 16)

    def __init__(self, config: DSIFNConfig | None = None, **options: Any) -> None:
        """Build the network.

        Args:
            config: Full configuration; ``options`` override single fields of it.
            **options: Fields of :class:`DSIFNConfig`, e.g. ``in_channels=4``.
        """
        super().__init__()
        base = config if config is not None else DSIFNConfig()
        self.config = dataclasses.replace(base, **options) if options else base
        cfg = self.config
        # What a checkpoint recorded besides weights (threshold, provenance); see load_checkpoint.
        self.checkpoint_meta: dict[str, Any] = {}
        self.encoder = VGG16Encoder(cfg.in_channels)
        self.encoder_t2 = None if cfg.shared_encoder else VGG16Encoder(cfg.in_channels)

        keras = cfg.variant == "keras"
        enc_channels = self.encoder.out_channels
        strides = self.encoder.strides
        stages: list[DecoderStage] = []
        previous: int | None = None
        for i, widths in enumerate(decoder_widths(enc_channels)):
            level = len(enc_channels) - 1 - i  # encoder tap used by this stage
            in_ch = 2 * enc_channels[level] + (previous or 0)
            first, last = i == 0, i == len(enc_channels) - 1
            stage = DecoderStage(
                in_ch,
                widths,
                previous_channels=previous,
                channel_attention=cfg.stage1_channel_attention if first else True,
                bn_after_attention=not (keras and last),
                attention_bias=keras,
                dropout=cfg.dropout,
                prelu=cfg.prelu,
                spatial_size=None if cfg.input_size is None else cfg.input_size // strides[level],
                bn_eps=1e-3 if keras else 1e-5,
                bn_momentum=0.01 if keras else 0.1,  # Keras 0.99 is PyTorch 0.01
            )
            stages.append(stage)
            previous = stage.out_channels
        self.stages = nn.ModuleList(stages)
        self.heads = nn.ModuleList(nn.Conv2d(s.out_channels, 1, kernel_size=1) for s in stages)

        if cfg.encoder_weights is not None:
            self.load_encoder_weights(cfg.encoder_weights)
        if cfg.freeze_encoder:
            for encoder in self.encoders:
                encoder.requires_grad_(False)

    @property
    def encoders(self) -> list[VGG16Encoder]:
        """The encoder(s): one when shared, else T1's then T2's."""
        return [self.encoder] if self.encoder_t2 is None else [self.encoder, self.encoder_t2]

    def load_encoder_weights(self, source: str) -> None:
        """Load torchvision-format VGG16 weights into the encoder(s).

        Args:
            source: ``"imagenet"`` or a path to a torchvision ``vgg16`` state dict.
        """
        state = torchvision_to_encoder(load_vgg16_state_dict(source), self.config.in_channels)
        for encoder in self.encoders:
            encoder.load_state_dict(state)

    def train(self, mode: bool = True) -> DSIFN:
        """Set training mode; a frozen encoder always stays in eval mode."""
        super().train(mode)
        if self.config.freeze_encoder:
            for encoder in self.encoders:
                encoder.eval()
        return self

    def _check_inputs(self, t1: Tensor, t2: Tensor) -> None:
        cfg = self.config
        check_pair(t1, t2, cfg.in_channels)
        height, width = t1.shape[-2:]
        if cfg.input_size is not None and (height, width) != (cfg.input_size, cfg.input_size):
            raise InputError(
                f"this {cfg.variant} model takes {cfg.input_size}x{cfg.input_size} inputs only; "
                f"got {height}x{width} (tile larger images)"
            )

    @property
    def attention_stages(self) -> tuple[int, ...]:
        """Indices of the decoder stages (coarsest first) that have channel attention."""
        return tuple(
            i
            for i, stage in enumerate(self.stages)
            if isinstance(stage, DecoderStage) and stage.channel_attention is not None
        )

    def receptive_radius(self) -> int:
        """How far, in input pixels, the side-1 change map reaches beyond each pixel.

        Counted from the layers (3x3 convolutions, 2x2 pools, transposed convolutions and the
        7x7 spatial attention), with the channel attention's descriptors held fixed: output
        pixel (i, j) depends on no input pixel farther than this from it. With padding to a
        multiple of 16 and tiles at multiples of 16, a tile whose margins are at least this
        wide predicts its interior exactly as the whole image would (given the same channel
        attention descriptors). 275 for DSIFN.
        """
        return decoder_receptive_radius(self)

    def forward(
        self, t1: Tensor, t2: Tensor, *, pooled: Mapping[int, Descriptors] | None = None
    ) -> DSIFNOutput:
        """Predict change logits for a batch of image pairs.

        Args:
            t1: (B, C, H, W) normalised image of the first date, H, W >= 16.
            t2: (B, C, H, W) normalised image of the second date.
            pooled: Channel-attention descriptors to use instead of the inputs' own, by stage
                index (coarsest first); see :meth:`attention_input`. Stages not given pool
                their own input, as in training.

        Returns:
            Five logit maps, finest first; the stride-s map is (B, 1, ceil(H/s), ceil(W/s)).
        """
        height, width = t1.shape[-2:]
        feats1, feats2 = self._features(t1, t2)
        logits: list[Tensor] = []
        state: Tensor | None = None
        levels = len(feats1)
        given = pooled or {}
        for i, (stage, head) in enumerate(zip(self.stages, self.heads, strict=True)):
            level = levels - 1 - i
            state = stage(feats1[level], feats2[level], state, given.get(i))
            stride = 2**level
            logits.append(crop_to(head(state), height, width, stride))
        return DSIFNOutput(*reversed(logits))

    def attention_input(
        self,
        t1: Tensor,
        t2: Tensor,
        stage: int,
        *,
        pooled: Mapping[int, Descriptors] | None = None,
    ) -> Tensor:
        """The input of one decoder stage's channel attention, running only what it needs.

        Tiled inference that must equal whole-image inference computes each attention stage's
        descriptors over the whole scene from this, one stage after the other.

        Args:
            t1: (B, C, H, W) normalised image of the first date, H and W multiples of 16.
            t2: (B, C, H, W) normalised image of the second date.
            stage: Decoder stage index, coarsest first (see :attr:`attention_stages`).
            pooled: Descriptors for the earlier stages, as for :meth:`forward`.

        Returns:
            (B, channels, H / s, W / s) at the stage's stride s.
        """
        if not 0 <= stage < len(self.stages):
            raise InputError(f"stage must be in [0, {len(self.stages)}); got {stage}")
        height, width = t1.shape[-2:]
        if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE:
            raise InputError(f"image sides must be multiples of 16; got {height}x{width}")
        feats1, feats2 = self._features(t1, t2)
        given = pooled or {}
        state: Tensor | None = None
        levels = len(feats1)
        for i, module in enumerate(self.stages[: stage + 1]):
            assert isinstance(module, DecoderStage)
            level = levels - 1 - i
            x = module.fuse(feats1[level], feats2[level], state)
            if i == stage:
                return x
            state = module.refine(x, given.get(i))
        raise AssertionError("unreachable")

    def _features(self, t1: Tensor, t2: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        # Checked, padded to multiples of 16 by reflection, through the encoder(s).
        self._check_inputs(t1, t2)
        t1, t2 = reflect_pad(t1), reflect_pad(t2)
        if self.encoder_t2 is None:
            # One encoder pass over both dates: halves the kernel launches, same result.
            both = self.encoder(torch.cat([t1, t2], dim=0))
            return [f[: t1.shape[0]] for f in both], [f[t1.shape[0] :] for f in both]
        return self.encoder(t1), self.encoder_t2(t2)


def _radius_through(modules: Sequence[nn.Module], radius: int, stride: int) -> tuple[int, int]:
    # Receptive radius and stride after a chain of layers (see DSIFN.receptive_radius).
    for module in modules:
        if isinstance(module, nn.ConvTranspose2d):
            if module.kernel_size != module.stride or module.stride[0] != 2:
                raise ConfigError("only 2x2, stride-2 transposed convolutions are counted")
            stride //= 2
            radius += stride  # the coarse cell reaches one fine cell past the fine one
        elif isinstance(module, nn.Conv2d):
            k, d = module.kernel_size[0], module.dilation[0]
            radius += (k // 2) * d * stride
        elif isinstance(module, nn.MaxPool2d):
            stride *= int(module.stride)  # type: ignore[arg-type]
    return radius, stride


def decoder_receptive_radius(model: DSIFN) -> int:
    """See :meth:`DSIFN.receptive_radius`."""
    layers = list(model.encoder.features)
    taps: list[int] = []
    radius, stride = 0, 1
    for index, module in enumerate(layers):
        radius, stride = _radius_through([module], radius, stride)
        if index in model.encoder.tap_indices:
            taps.append(radius)
    state = 0
    stride = model.encoder.strides[-1]
    for i, module in enumerate(model.stages):
        assert isinstance(module, DecoderStage)
        level = len(taps) - 1 - i
        up = [] if module.up is None else [module.up]
        state, stride = _radius_through(up, state, stride if up else model.encoder.strides[level])
        state = max(state, taps[level])
        chain = [m for block in module.blocks for m in block.modules()]
        state, stride = _radius_through([*chain, module.spatial_attention.conv], state, stride)
    return state
