"""The inference fast path: the same network, prepared to run faster.

What is done, and why it is exact (or how close it is):

- **channels_last** (NHWC) memory layout: cuDNN and oneDNN convolutions run natively in it, so
  no layout reorders happen around every convolution. Exact up to the summation order.
- **bf16 autocast** where the hardware multiplies bf16 natively (CUDA, CPUs with AMX or
  AVX-512 BF16; see :func:`dsifn.devices.resolve_precision`). Not exact: about 3 significant
  digits; :func:`dsifn.benchmark.compare_accuracy` states the cost. ``precision="fp32"`` opts
  out.
- **BatchNorm folding** (inference only). DSIFN's conv block is 3x3 conv -> PReLU -> BatchNorm
  -> Dropout, so a BatchNorm cannot fold into its own convolution (the PReLU sits between), and
  the BatchNorm after a stage's spatial attention feeds a transposed convolution, whose bias
  would have to depend on the output pixel's parity. What folds exactly is a BatchNorm into the
  *next* convolution: the block BatchNorms that another conv block follows (the eval-mode
  Dropout between them is the identity) and the last stage's BatchNorm into its 1x1 side head.
  A 3x3 convolution pads with zeros, and a folded BatchNorm shift would be wrong where the
  kernel overlaps the padding (the zeros were never shifted); :class:`FoldedConv2d` adds the
  missing correction on the one-pixel border ring, so the fold is exact at every size.
  10 of the 19 BatchNorms of the ``"pytorch"`` variant fold. The baselines
  (:mod:`dsifn.models.registry`) put each BatchNorm directly after its convolution, so every one
  of them folds into that convolution (exact up to rounding, whatever the padding).
- **torch.compile** (inductor): fuses the elementwise work (PReLU, BatchNorm, attention
  products) into few kernels. Opt-in (``compile=True``): it costs one to two minutes per new
  input shape, so it pays off for many batches of one shape (a large scene), not for one small
  image. Training takes the same layout and precision choices in
  :class:`dsifn.training.step.TrainStep`, which also says why it does not compile by default.

Measured ratios to the eager fp32 NCHW baseline are in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Mapping
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsifn.devices import Precision, autocast, resolve_device, resolve_precision
from dsifn.errors import ConfigError
from dsifn.models.decoder import DecoderStage, Descriptors
from dsifn.models.dsifn import DSIFN, DSIFNOutput
from dsifn.models.outputs import ChangeOutput
from dsifn.models.registry import ChangeNetwork

__all__ = [
    "FastInferenceModel",
    "FoldedConv2d",
    "fold_batchnorm",
    "fold_into_convolutions",
    "optimize_for_inference",
]


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Per-channel (scale, shift) of an eval-mode BatchNorm: ``bn(x) = scale * x + shift``."""
    assert bn.running_var is not None and bn.running_mean is not None
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


class FoldedConv2d(nn.Conv2d):
    """A zero-padded convolution with a preceding per-channel affine map folded in.

    Computes ``conv(scale * x + shift)`` where the convolution pads ``scale * x + shift`` with
    zeros, as the unfolded pair of layers did. The scale goes into the weights (zeros stay
    zeros). The shift is a constant input, so its contribution is the sum of the kernel taps
    that fall inside the image: the full sum (``shift_taps`` summed) in the interior, which goes
    into the bias, minus the taps that fall on padding near the borders, added back on the
    border ring by :meth:`forward`.

    Attributes:
        shift_taps: (O, 1, kH, kW) per-tap contribution of the folded shift.
    """

    shift_taps: Tensor

    @classmethod
    def fold(cls, conv: nn.Conv2d, scale: Tensor, shift: Tensor) -> FoldedConv2d:
        """Fold ``x -> scale * x + shift`` (per input channel) into ``conv``.

        Args:
            conv: A stride-1, ungrouped, undilated convolution with "same" zero padding.
            scale: (C_in,) per-channel factor.
            shift: (C_in,) per-channel offset.

        Returns:
            A new module; ``conv`` is left unchanged.
        """
        if conv.groups != 1 or conv.stride != (1, 1) or conv.dilation != (1, 1):
            raise ValueError("only stride-1, ungrouped, undilated convolutions fold here")
        if conv.padding_mode != "zeros" or conv.padding != tuple(k // 2 for k in conv.kernel_size):
            raise ValueError("only 'same' zero-padded convolutions with odd kernels fold here")
        folded = cls(
            conv.in_channels,
            conv.out_channels,
            cast("tuple[int, int]", conv.kernel_size),
            padding=cast("tuple[int, int]", conv.padding),
            bias=True,
        ).to(device=conv.weight.device, dtype=conv.weight.dtype)
        weight = conv.weight.double()
        # (O, 1, kH, kW): what a constant input of `shift` adds through each tap.
        taps = (weight * shift.view(1, -1, 1, 1)).sum(dim=1, keepdim=True)
        bias = taps.sum(dim=(1, 2, 3))
        if conv.bias is not None:
            bias = bias + conv.bias.double()
        with torch.no_grad():
            folded.weight.copy_(weight * scale.view(1, -1, 1, 1))
            assert folded.bias is not None
            folded.bias.copy_(bias)
        folded.register_buffer("shift_taps", taps.to(conv.weight.dtype))
        return folded

    def _border_correction(self, height: int, width: int, like: Tensor) -> Tensor:
        """(1, O, h, w) correction for an image of at most 3 x 3 distinct border cases.

        Each output pixel's correction depends only on which borders it touches, so a
        ``min(H, 2p + 1) x min(W, 2p + 1)`` image of ones through the shift taps holds every
        case (p the padding); its interior value is the full sum already in the bias.
        """
        pad_h, pad_w = cast("tuple[int, int]", self.padding)
        h, w = min(height, 2 * pad_h + 1), min(width, 2 * pad_w + 1)
        ones = torch.ones(1, 1, h, w, dtype=like.dtype, device=like.device)
        taps = self.shift_taps.to(like.dtype)
        inside = F.conv2d(ones, taps, padding=(pad_h, pad_w))
        return inside - taps.sum(dim=(1, 2, 3)).view(1, -1, 1, 1)

    def forward(self, x: Tensor) -> Tensor:
        """Convolve (B, C_in, H, W) input to (B, O, H, W) as the unfolded layers would."""
        out = super().forward(x)
        height, width = out.shape[-2:]
        pad_h, pad_w = cast("tuple[int, int]", self.padding)
        small = self._border_correction(height, width, out)
        if height <= 2 * pad_h + 1 or width <= 2 * pad_w + 1:
            # Tiny maps: every pixel may touch a border; expand the few cases explicitly.
            rows = _case_index(height, pad_h, out.device)
            cols = _case_index(width, pad_w, out.device)
            return out + small[:, :, rows][:, :, :, cols]
        # Only the ring of `pad` pixels touches the padding: correct it in place, leaving the
        # interior (nearly all pixels) alone.
        mid_h, mid_w = height - 2 * pad_h, width - 2 * pad_w
        top, bottom = small[:, :, :pad_h], small[:, :, pad_h + 1 :]
        for band, rows_slice in ((top, slice(0, pad_h)), (bottom, slice(height - pad_h, None))):
            row = torch.cat(
                [
                    band[..., :pad_w],
                    band[..., pad_w : pad_w + 1].expand(-1, -1, -1, mid_w),
                    band[..., pad_w + 1 :],
                ],
                dim=-1,
            )
            out[:, :, rows_slice, :] += row
        middle = slice(pad_h, height - pad_h)
        out[:, :, middle, :pad_w] += small[:, :, pad_h : pad_h + 1, :pad_w].expand(
            -1, -1, mid_h, -1
        )
        out[:, :, middle, width - pad_w :] += small[:, :, pad_h : pad_h + 1, pad_w + 1 :].expand(
            -1, -1, mid_h, -1
        )
        return out


def _case_index(size: int, pad: int, device: torch.device) -> Tensor:
    """Index into the border-case axis (length ``min(size, 2 pad + 1)``) for each position."""
    cases = min(size, 2 * pad + 1)
    if size <= cases:
        return torch.arange(size, device=device)
    index = torch.full((size,), pad, dtype=torch.long, device=device)
    index[:pad] = torch.arange(pad, device=device)
    index[size - pad :] = torch.arange(pad + 1, cases, device=device)
    return index


def _fold_into_1x1(conv: nn.Conv2d, scale: Tensor, shift: Tensor) -> nn.Conv2d:
    """Fold a per-input-channel affine map into a 1x1 convolution (exact: no padding)."""
    folded = copy.deepcopy(conv)
    weight = conv.weight.double()
    bias = (weight * shift.view(1, -1, 1, 1)).sum(dim=(1, 2, 3))
    if conv.bias is not None:
        bias = bias + conv.bias.double()
    with torch.no_grad():
        folded.weight.copy_(weight * scale.view(1, -1, 1, 1))
        folded.bias = nn.Parameter(bias.to(conv.weight.dtype))
    return folded


def fold_batchnorm(model: ChangeNetwork) -> ChangeNetwork:
    """Return an eval-mode copy of ``model`` with BatchNorms folded where it is exact.

    A baseline's BatchNorms each fold into the convolution before them
    (:func:`fold_into_convolutions`). DSIFN's: each conv block's BatchNorm into the next
    block's 3x3 convolution (with the border correction of :class:`FoldedConv2d`), and the
    last stage's BatchNorm after spatial attention into its 1x1 side head. Left alone: a
    stage's last block BatchNorm (spatial attention follows; its channel max is not affine)
    and the other stages' BatchNorm after spatial attention (a transposed convolution
    follows). Dropout becomes the identity, as in eval mode. The copy is for inference: it
    must not be trained.

    Args:
        model: The network; not modified.

    Returns:
        The folded copy, in eval mode. Its outputs equal ``model.eval()``'s up to rounding.
    """
    folded = copy.deepcopy(model).eval()
    if not isinstance(folded, DSIFN):
        fold_into_convolutions(folded)
        return folded
    for stage, head_index in zip(folded.stages, range(len(folded.heads)), strict=True):
        assert isinstance(stage, DecoderStage)
        blocks = list(stage.blocks)
        for current, following in itertools.pairwise(blocks):
            assert isinstance(current, nn.Sequential) and isinstance(following, nn.Sequential)
            bn, conv = current[2], following[0]
            if not isinstance(bn, nn.BatchNorm2d) or not isinstance(conv, nn.Conv2d):
                continue
            scale, shift = _bn_affine(bn)
            following[0] = FoldedConv2d.fold(conv, scale, shift)
            current[2] = nn.Identity()
            current[3] = nn.Identity()
        last_block = blocks[-1]
        assert isinstance(last_block, nn.Sequential)
        last_block[3] = nn.Identity()
        is_last = head_index == len(folded.heads) - 1
        if is_last and isinstance(stage.norm, nn.BatchNorm2d):
            head = folded.heads[head_index]
            assert isinstance(head, nn.Conv2d)
            scale, shift = _bn_affine(stage.norm)
            folded.heads[head_index] = _fold_into_1x1(head, scale, shift)
            stage.norm = None
    return folded


def fold_into_convolutions(module: nn.Module) -> None:
    """Fold, in place, every eval-mode BatchNorm that directly follows a convolution.

    Within each ``nn.Sequential``, a ``Conv2d`` followed by a ``BatchNorm2d`` becomes one
    convolution (:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) and the BatchNorm an
    identity: ``bn(conv(x))`` is affine in the convolution's output, padding included.

    Args:
        module: A network in eval mode, changed in place.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for sequence in [m for m in module.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(sequence) - 1):
            conv, bn = sequence[i], sequence[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                sequence[i] = fuse_conv_bn_eval(conv, bn)
                sequence[i + 1] = nn.Identity()


class FastInferenceModel:
    """A network prepared for inference; call it like the model, ``fast(t1, t2)``.

    It runs without gradients, in the resolved precision and memory layout, and returns
    float32 logits whatever the precision. Build it with :func:`optimize_for_inference`.

    Attributes:
        module: The prepared (copied, possibly folded) network.
        device: Where it runs.
        precision: The resolved precision.
        channels_last: Whether inputs are converted to NHWC.
    """

    def __init__(
        self,
        module: ChangeNetwork,
        forward: Callable[[Tensor, Tensor], DSIFNOutput | ChangeOutput],
        *,
        device: torch.device,
        precision: Precision,
        channels_last: bool,
    ) -> None:
        self.module = module
        self._forward = forward
        self.device = device
        self.precision: Precision = precision
        self.channels_last = channels_last

    @property
    def config(self) -> Any:
        """The network's configuration."""
        return self.module.config

    def __call__(
        self, t1: Tensor, t2: Tensor, *, pooled: Mapping[int, Descriptors] | None = None
    ) -> DSIFNOutput | ChangeOutput:
        """Predict change logits.

        Args:
            t1: (B, C, H, W) normalised first-date images (any device; moved here).
            t2: (B, C, H, W) normalised second-date images.
            pooled: Fixed channel-attention descriptors of a DSIFN (see
                :meth:`DSIFN.forward`); a compiled model runs these calls eagerly.

        Returns:
            float32 logit maps, finest first, as the network returns them (DSIFN's five, a
            baseline's one).
        """
        t1, t2 = self._place(t1), self._place(t2)
        with torch.inference_mode(), autocast(self.device, self.precision):
            if pooled is None:
                out = self._forward(t1, t2)
            else:
                out = self._dsifn("fixed channel-attention descriptors")(t1, t2, pooled=pooled)
        return type(out)(*(o.float() for o in out))

    def _dsifn(self, what: str) -> DSIFN:
        if not isinstance(self.module, DSIFN):
            raise ConfigError(f"{what} are DSIFN's; this network has no channel attention")
        return self.module

    def attention_input(
        self, t1: Tensor, t2: Tensor, stage: int, *, pooled: Mapping[int, Descriptors]
    ) -> Tensor:
        """One stage's channel-attention input (see :meth:`DSIFN.attention_input`), float32."""
        t1, t2 = self._place(t1), self._place(t2)
        network = self._dsifn("channel-attention inputs")
        with torch.inference_mode(), autocast(self.device, self.precision):
            out = network.attention_input(t1, t2, stage, pooled=pooled)
        return out.float()

    def _place(self, x: Tensor) -> Tensor:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.to(self.device, non_blocking=True).contiguous(memory_format=fmt)


def optimize_for_inference(
    model: ChangeNetwork,
    *,
    device: str | torch.device = "auto",
    precision: str = "auto",
    channels_last: bool = True,
    fold_bn: bool = True,
    compile: bool = False,
) -> tuple[FastInferenceModel, Precision]:
    """Prepare a copy of ``model`` for fast inference.

    Args:
        model: The network; not modified (a copy is prepared).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`.
        precision: ``"auto"`` (bf16 where the hardware has it, else fp32), ``"fp32"``, ``"bf16"``
            or ``"fp16"`` (CUDA only).
        channels_last: Use the NHWC memory layout.
        fold_bn: Fold BatchNorms into the following convolutions (:func:`fold_batchnorm`).
        compile: ``torch.compile`` the forward; worth its start-up time (tens of seconds, again
            for each new input size) only for many batches of one size, such as a scene.

    Returns:
        The prepared model (a callable taking ``(t1, t2)`` of shape (B, C, H, W) and returning
        float32 logits as the network does) and the resolved precision.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    resolved = resolve_precision(precision, dev)
    module = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    module.requires_grad_(False)
    module = module.to(dev)
    if channels_last:
        _to_channels_last(module)
    forward: Callable[[Tensor, Tensor], DSIFNOutput | ChangeOutput] = module
    if compile:
        # Inductor's "freezing" treats the weights as constants and prepacks them for oneDNN
        # (measured in benchmarks/RESULTS.md, "Compiling inference").
        options: dict[str, Any] | None = {"freezing": True} if dev.type == "cpu" else None
        compiled = torch.compile(module, options=options)
        forward = cast("Callable[[Tensor, Tensor], DSIFNOutput | ChangeOutput]", compiled)
    fast = FastInferenceModel(
        module, forward, device=dev, precision=resolved, channels_last=channels_last
    )
    return fast, resolved


def _to_channels_last(module: nn.Module) -> None:
    """Convert the 4-d parameters and buffers of ``module`` to NHWC, in place."""
    module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
