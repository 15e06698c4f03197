"""The deep-supervision loss of DSIFN: BCE plus soft Dice on each of the five side outputs.

Zhang et al., ISPRS J. P&RS 166:183-200, 2020, section 3.3: every side output is compared with
the reference change map at that output's resolution by binary cross-entropy plus Dice loss,
and the five terms are summed with equal weights. Both official loss files apply a sigmoid
where they should not (on outputs that are already probabilities, or on the labels); here the
model returns logits, the cross-entropy is computed from logits and the Dice term from
``sigmoid(logits)``.

How the reference meets each output (``target_mode``):

- ``"downsample"`` (the paper's way, default): the reference and the valid mask are brought to
  each output's size. Output pixel (i, j) at stride s covers input pixels
  [i*s, (i+1)*s) x [j*s, (j+1)*s) (the model pads bottom/right and crops to ``ceil(H/s)``), so
  its target is the fraction of changed pixels among the *valid* input pixels of that cell: a
  soft target in [0, 1], exact at every size, including sides that are not multiples of s
  (the cells on the bottom/right edge are partial). A cell without any valid pixel does not
  count, neither in the cross-entropy nor in the Dice term; every other cell counts once,
  whatever its number of valid pixels.
- ``"upsample"`` (what later ports do): each output is bilinearly upsampled by its stride to
  (ceil(H/s) * s, ceil(W/s) * s), cropped to (H, W) (the same pixel geometry as above) and
  compared with the full-resolution reference, invalid pixels excluded.

Reductions: the cross-entropy is the mean over the counted pixels of the whole batch. The Dice
term is one soft Dice over the whole batch (sums over every counted pixel of every image), not a
mean of per-image Dice: a tile with no change has a per-image Dice that depends only on the
smoothing constant and swings the mean, while the batch Dice follows the split-level F1 that is
reported. ``smooth`` (> 0) is added to numerator and denominator, so an all-background batch
gives a finite loss, ``1 - smooth / (sum(p) + smooth)``, that pushes predictions towards 0.

Everything is computed in float32 with autocast disabled, so bf16/fp16 logits from a model run
under ``torch.autocast`` are fine.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dsifn._validation import check_choice
from dsifn.errors import ConfigError, InputError

__all__ = ["DeepSupervisionLoss", "TargetMode", "downsample_target"]

TargetMode = Literal["downsample", "upsample"]


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """A context in which autocast is off for ``device`` (a no-op where autocast is unknown)."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def downsample_target(
    target: Tensor, valid: Tensor | None, stride: int
) -> tuple[Tensor, Tensor | None]:
    """Bring a reference map and its valid mask to the grid of a stride-``s`` output.

    Each output cell covers an ``s x s`` block of input pixels (partial at the bottom/right
    edge when the side is not a multiple of ``s``). Its target is the fraction of changed
    pixels among the valid pixels of the block; it is valid when the block has a valid pixel.

    Args:
        target: (B, 1, H, W) float32 reference in [0, 1].
        valid: (B, 1, H, W) bool mask of pixels that count, or None for all.
        stride: Output stride s >= 1.

    Returns:
        The (B, 1, ceil(H/s), ceil(W/s)) float32 target and the bool mask of cells that count
        (None when ``valid`` is None: every cell then has at least one real pixel).
    """
    if stride == 1:
        return target, valid
    height, width = target.shape[-2:]
    pad = (0, -width % stride, 0, -height % stride)
    # Padding is marked invalid, so partial edge cells average over their real pixels only.
    weight = torch.ones_like(target) if valid is None else valid.to(target.dtype)
    changed = F.pad(target * weight, pad)
    weight = F.pad(weight, pad)
    # avg_pool2d's mean times s*s is the block sum; only the ratio of the two sums is used.
    count = F.avg_pool2d(weight, stride)
    fraction = F.avg_pool2d(changed, stride) / count.clamp_min(1.0 / (stride * stride))
    return fraction.clamp(0.0, 1.0), (None if valid is None else count > 0)


def upsample_logits(logits: Tensor, stride: int, size: tuple[int, int]) -> Tensor:
    """Upsample a stride-``s`` logit map to the input grid.

    The map is scaled by ``s`` (bilinear, ``align_corners=False``) to the padded size the model
    worked at, then cropped to ``size``, keeping output cell (i, j) over input block
    [i*s, (i+1)*s) x [j*s, (j+1)*s).

    Args:
        logits: (B, 1, ceil(H/s), ceil(W/s)) logits.
        stride: s >= 1.
        size: (H, W).

    Returns:
        (B, 1, H, W) logits.
    """
    if stride == 1:
        return logits
    height, width = logits.shape[-2:]
    up = F.interpolate(
        logits, size=(height * stride, width * stride), mode="bilinear", align_corners=False
    )
    return up[..., : size[0], : size[1]]


class DeepSupervisionLoss(nn.Module):
    """BCE-with-logits plus soft Dice on each side output, summed with per-scale weights.

    Zhang et al., ISPRS J. P&RS 166, 2020 (section 3.3). The module docstring says how targets
    meet each output and how the terms are reduced.

    Example:
        >>> loss_fn = DeepSupervisionLoss()
        >>> loss = loss_fn(model(t1, t2), target)  # target (B, 1, H, W) in {0, 1}
    """

    def __init__(
        self,
        weights: Sequence[float] = (1.0, 1.0, 1.0, 1.0, 1.0),
        target_mode: TargetMode = "downsample",
        pos_weight: float | None = None,
        bce_weight: float = 1.0,
        dice_weight: float = 1.0,
        smooth: float = 1.0,
    ) -> None:
        """Configure the loss.

        Args:
            weights: One weight per side output, finest (stride 1) first; output k has stride
                2**k.
            target_mode: ``"downsample"`` the reference to each output (paper) or
                ``"upsample"`` each output to the reference.
            pos_weight: Weight of changed pixels in the cross-entropy (None: 1), to offset the
                rarity of change.
            bce_weight: Factor of the cross-entropy term at every scale.
            dice_weight: Factor of the Dice term at every scale.
            smooth: Positive constant added to the Dice numerator and denominator.

        Raises:
            ConfigError: If an option is out of range.
        """
        super().__init__()
        self.target_mode: TargetMode = check_choice(
            "target_mode", target_mode, get_args(TargetMode)
        )
        self.weights = tuple(float(w) for w in weights)
        if not self.weights or any(not math.isfinite(w) or w < 0 for w in self.weights):
            raise ConfigError(f"weights must be one finite value >= 0 per output; got {weights}")
        if pos_weight is not None and not (math.isfinite(pos_weight) and pos_weight > 0):
            raise ConfigError(f"pos_weight must be positive; got {pos_weight}")
        for name, value in (("bce_weight", bce_weight), ("dice_weight", dice_weight)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite value >= 0; got {value}")
        if not (math.isfinite(smooth) and smooth > 0):
            raise ConfigError(f"smooth must be positive (it keeps Dice finite); got {smooth}")
        self.pos_weight = pos_weight
        self.bce_weight = float(bce_weight)
        self.dice_weight = float(dice_weight)
        self.smooth = float(smooth)

    @property
    def strides(self) -> tuple[int, ...]:
        """Stride of each side output, finest first: 1, 2, 4, ..."""
        return tuple(2**k for k in range(len(self.weights)))

    def forward(
        self, outputs: Sequence[Tensor], target: Tensor, valid: Tensor | None = None
    ) -> Tensor:
        """Compute the weighted sum of all terms.

        Args:
            outputs: :class:`~dsifn.models.dsifn.DSIFNOutput` or a sequence of logit tensors,
                finest first, output k of shape (B, 1, ceil(H/2**k), ceil(W/2**k)), any float
                dtype.
            target: (B, 1, H, W) (or (B, H, W)) reference, values in [0, 1] (1 = change; soft
                values allowed).
            valid: (B, 1, H, W) (or (B, H, W)) bool mask of pixels that count, or None.

        Returns:
            Scalar float32 loss.
        """
        terms = self.components(outputs, target, valid)
        total = torch.zeros((), dtype=torch.float32, device=target.device)
        for weight, stride in zip(self.weights, self.strides, strict=True):
            total = total + weight * (
                self.bce_weight * terms[f"bce_stride{stride}"]
                + self.dice_weight * terms[f"dice_stride{stride}"]
            )
        return total

    def components(
        self, outputs: Sequence[Tensor], target: Tensor, valid: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Compute each unweighted term, for logging.

        Args:
            outputs: As for :meth:`forward`.
            target: As for :meth:`forward`.
            valid: As for :meth:`forward`.

        Returns:
            ``{"bce_stride1": ..., "dice_stride1": ..., ..., "dice_stride16": ...}``: scalar
            float32 tensors (not multiplied by the per-scale, BCE or Dice weights).
        """
        target, valid = self._check(outputs, target, valid)
        size = (target.shape[-2], target.shape[-1])
        terms: dict[str, Tensor] = {}
        with _no_autocast(target.device):
            for logits, stride in zip(outputs, self.strides, strict=True):
                logits = logits.float()
                if self.target_mode == "downsample":
                    ref, mask = downsample_target(target, valid, stride)
                else:
                    logits = upsample_logits(logits, stride, size)
                    ref, mask = target, valid
                bce, dice = self._terms(logits, ref, mask)
                terms[f"bce_stride{stride}"] = bce
                terms[f"dice_stride{stride}"] = dice
        return terms

    def _terms(self, logits: Tensor, ref: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """BCE mean and batch soft Dice of (B, 1, h, w) float32 logits against ``ref``."""
        pos_weight = (
            None
            if self.pos_weight is None
            else torch.tensor(self.pos_weight, dtype=logits.dtype, device=logits.device)
        )
        bce = F.binary_cross_entropy_with_logits(
            logits, ref, reduction="none", pos_weight=pos_weight
        )
        prob = torch.sigmoid(logits)
        if mask is None:
            bce_mean = bce.mean()
        else:
            weight = mask.to(logits.dtype)
            # A batch with no valid pixel gives 0 (still attached to the graph), not NaN.
            bce_mean = (bce * weight).sum() / weight.sum().clamp_min(1.0)
            prob, ref = prob * weight, ref * weight
        intersection = (prob * ref).sum()
        dice = 1.0 - (2.0 * intersection + self.smooth) / (prob.sum() + ref.sum() + self.smooth)
        return bce_mean, dice

    def _check(
        self, outputs: Sequence[Tensor], target: Tensor, valid: Tensor | None
    ) -> tuple[Tensor, Tensor | None]:
        """Validate shapes and values; return the float32 target and bool mask, (B, 1, H, W)."""
        if not isinstance(target, Tensor):
            raise InputError(f"target must be a torch.Tensor; got {type(target).__name__}")
        if target.ndim == 3:
            target = target.unsqueeze(1)
        if target.ndim != 4 or target.shape[1] != 1:
            raise InputError(f"target must have shape (B, 1, H, W); got {tuple(target.shape)}")
        target = target.float()
        if valid is not None:
            if valid.ndim == 3:
                valid = valid.unsqueeze(1)
            if valid.shape != target.shape:
                raise InputError(
                    f"valid mask shape {tuple(valid.shape)} differs from target shape "
                    f"{tuple(target.shape)}"
                )
            valid = valid.bool()
        if len(outputs) != len(self.weights):
            raise InputError(
                f"expected {len(self.weights)} side outputs (one per weight); got {len(outputs)}"
            )
        batch, _, height, width = target.shape
        for k, (logits, stride) in enumerate(zip(outputs, self.strides, strict=True)):
            expected = (batch, 1, -(-height // stride), -(-width // stride))
            if tuple(logits.shape) != expected:
                raise InputError(
                    f"side output {k} (stride {stride}) has shape {tuple(logits.shape)}; "
                    f"expected {expected} for a target of {height}x{width}"
                )
            if not logits.is_floating_point():
                raise InputError(f"side output {k} must be float logits; got {logits.dtype}")
        # One host sync per call; catches 0/255 masks, the most common labelling mistake.
        if bool(((target < 0) | (target > 1) | target.isnan()).any()):
            raise InputError("target values must lie in [0, 1] (1 = change); decode 0/255 masks")
        return target, valid
