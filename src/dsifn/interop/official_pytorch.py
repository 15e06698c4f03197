"""Load state dicts saved from the authors' PyTorch DSIFN model file.

The authors' PyTorch module (Zhang et al., ISPRS J. P&RS 166, 2020, public code) names its
parts by hand (``t1_base``, ``o1_conv1``, ``bn_sa1``, ``trans_conv1``...). Their names
map onto ours one to one (stage k = 1..5 is our ``stages[k-1]``, coarsest first):

=================================  ===============================================
theirs                             ours
=================================  ===============================================
``t1_base.features.N.*``           ``encoder.features.N.*`` (same VGG16 indices)
``t2_base.features.N.*``           ``encoder_t2.features.N.*``, or dropped when it
                                   equals ``t1_base`` (one encoder passed twice)
``oK_convJ.{0,1,2}.*`` (blocks)    ``stages[K-1].blocks[J-1].{0,1,2}.*``
                                   (conv, PReLU, BatchNorm: same positions)
``o1_conv3``, ``oK_conv4`` (K>1)   ``heads[K-1]`` (the 1x1 side heads)
``saK.conv1.weight``               ``stages[K-1].spatial_attention.conv.weight``
``bn_saK.*``                       ``stages[K-1].norm.*``
``caK.fc1/fc2.weight`` (K>1)       ``stages[K-1].channel_attention.fc1/fc2.weight``
``trans_convK.*`` (K=1..4)         ``stages[K].up.*``
``ca1.*``, ``bn_ca1.*``,           dropped: built by their file, never used by its
``bn_ca2.*``                       forward
=================================  ===============================================

Their spatial attention takes ``cat([mean, max])`` over channels, their channel attention sums
the MLP of the average- and max-pooled descriptors, their decoder concatenates (upsampled
state, T1, T2) and their BatchNorm uses PyTorch's defaults: ours does the same with the
``"pytorch"`` variant, so the weights load unchanged and ``sigmoid`` of our logits equals their
outputs (which carry the sigmoid inside).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dsifn.errors import CheckpointError, WeightsError
from dsifn.io.atomic import check_input_file
from dsifn.models.checkpoint import load_plain
from dsifn.models.dsifn import DSIFN

__all__ = ["load_official_pytorch", "official_to_dsifn", "read_official_state_dict"]

# Decoder stages in their file; stage 1 is the coarsest (stride 16).
_STAGES = 5

# Keys their file builds but its forward never uses.
_UNUSED = re.compile(r"^(ca1|bn_ca1|bn_ca2)\.")
# A full torchvision VGG16 as encoder also carries a classifier the network never uses.
_ENCODER_EXTRA = re.compile(r"^t[12]_base\.(classifier|avgpool)\.")


def _stage(number: str) -> int | None:
    """Our stage index of their 1-based stage number, None when out of range."""
    index = int(number) - 1
    return index if 0 <= index < _STAGES else None


def _rename_block(m: re.Match[str]) -> str | None:
    stage, conv, rest = _stage(m[1]), int(m[2]), m[3]
    if stage is None or conv < 1:
        return None
    # Stage 1 has two conv blocks and its head is o1_conv3; later stages three and oK_conv4.
    head = 3 if stage == 0 else 4
    if conv == head and rest in ("weight", "bias"):  # a plain 1x1 Conv2d
        return f"heads.{stage}.{rest}"
    if conv < head and re.fullmatch(r"[0-2]\.\w+", rest):  # Sequential(conv, PReLU, BN, ...)
        return f"stages.{stage}.blocks.{conv - 1}.{rest}"
    return None


def _rename_sa(m: re.Match[str]) -> str | None:
    stage = _stage(m[1])
    return None if stage is None else f"stages.{stage}.spatial_attention.conv.weight"


def _rename_bn(m: re.Match[str]) -> str | None:
    stage = _stage(m[1])
    return None if stage is None else f"stages.{stage}.norm.{m[2]}"


def _rename_ca(m: re.Match[str]) -> str | None:
    stage = _stage(m[1])  # ca1 is unused by their forward and dropped before this
    return None if not stage else f"stages.{stage}.channel_attention.{m[2]}.weight"


def _rename_up(m: re.Match[str]) -> str | None:
    stage = _stage(m[1])  # trans_convK upsamples stage K's state for stage K+1
    return None if stage is None or stage == _STAGES - 1 else f"stages.{stage + 1}.up.{m[2]}"


def _rename_encoder(m: re.Match[str]) -> str:
    name = "encoder" if m[1] == "1" else "encoder_t2"
    return f"{name}.features.{m[2]}.{m[3]}"


_RULES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str | None]], ...] = (
    (re.compile(r"^t([12])_base\.features\.(\d+)\.(\w+)$"), _rename_encoder),
    (re.compile(r"^o(\d)_conv(\d)\.(.+)$"), _rename_block),
    (re.compile(r"^sa(\d)\.conv1\.weight$"), _rename_sa),
    (re.compile(r"^bn_sa(\d)\.(\w+)$"), _rename_bn),
    (re.compile(r"^ca(\d)\.(fc[12])\.weight$"), _rename_ca),
    (re.compile(r"^trans_conv(\d)\.(\w+)$"), _rename_up),
)


def _our_key(key: str) -> str | None:
    """Our name for one of their keys, or None when no rule applies."""
    for pattern, rename in _RULES:
        m = pattern.match(key)
        if m:
            return rename(m)
    return None


def _their_key(key: str) -> str:
    """Their name for one of our keys (the inverse of the rules), for error messages."""
    m = re.match(r"^encoder(_t2)?\.(.*)$", key)
    if m:
        return f"{'t2' if m[1] else 't1'}_base.{m[2]}"
    m = re.match(r"^heads\.(\d)\.(.*)$", key)
    if m:
        stage = int(m[1]) + 1
        return f"o{stage}_conv{3 if stage == 1 else 4}.{m[2]}"
    m = re.match(
        r"^stages\.(\d)\.(blocks\.(\d)\.|spatial_attention\.conv\.|norm\.|"
        r"channel_attention\.|up\.)(.*)$",
        key,
    )
    if not m:
        return key
    stage, part, rest = int(m[1]) + 1, m[2], m[4]
    if part.startswith("blocks"):
        return f"o{stage}_conv{int(m[3]) + 1}.{rest}"
    names = {
        "spatial_attention.conv.": f"sa{stage}.conv1.",
        "norm.": f"bn_sa{stage}.",
        "channel_attention.": f"ca{stage}.",
        "up.": f"trans_conv{stage - 1}.",
    }
    return names[part] + rest


def _unwrap_state_dict(obj: Any) -> dict[str, Tensor]:
    """Unwrap ``{"state_dict": ...}``/``{"model": ...}``; strip DataParallel's ``module.``."""
    if isinstance(obj, Mapping):
        for wrapper in ("state_dict", "model"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(
            f"expected a state dict (a mapping of names to tensors); got {type(obj).__name__}"
        )
    state = {str(k): v for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _same_encoders(state: Mapping[str, Tensor]) -> bool:
    """True when every ``t2_base`` encoder tensor equals its ``t1_base`` twin (or is absent)."""
    t2 = {k: v for k, v in state.items() if k.startswith("t2_base.features.")}
    for key, value in t2.items():
        twin = state.get("t1_base" + key[len("t2_base") :])
        if twin is None or twin.shape != value.shape or not torch.equal(twin, value):
            return False
    return True


def official_to_dsifn(
    state_dict: Mapping[str, Any],
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Map a state dict of the authors' PyTorch DSIFN onto this package's module names.

    Pure: no file is read. The table in the module docstring gives the mapping.

    Args:
        state_dict: ``model.state_dict()`` of their module; also accepted wrapped as
            ``{"state_dict": ...}`` or ``{"model": ...}`` and with DataParallel's ``module.``
            prefix.

    Returns:
        ``(state, options)``: a state dict for ``DSIFN(**options)`` and the config options it
        implies: ``in_channels`` (from the first convolution), ``shared_encoder`` (True when
        both encoders hold equal tensors, i.e. one encoder object was passed twice, or there is no
        ``t2_base``), ``variant="pytorch"`` and ``stage1_channel_attention=False`` (their forward
        never uses ``ca1``).

    Raises:
        WeightsError: If keys are missing, unknown or of the wrong shape, i.e. the state dict is
            not this network's.
    """
    state = _unwrap_state_dict(state_dict)
    options = _options_of(state)
    mapped, source_of = _renamed(state, shared=options["shared_encoder"])
    _check_complete(mapped, source_of, options)
    return mapped, options


def _options_of(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """The DSIFN options a state dict of the authors' network implies."""
    first = state.get("t1_base.features.0.weight")
    if first is None or first.ndim != 4:
        raise WeightsError(
            "not a state dict of the authors' PyTorch DSIFN: no 't1_base.features.0.weight' "
            f"(first keys: {', '.join(list(state)[:3]) or 'none'})"
        )
    return {
        "in_channels": int(first.shape[1]),
        "shared_encoder": _same_encoders(state),
        "variant": "pytorch",
        "stage1_channel_attention": False,
    }


def _renamed(
    state: Mapping[str, Tensor], *, shared: bool
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Their tensors under our names, and the key each of ours came from."""
    mapped: dict[str, Tensor] = {}
    source_of: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in state.items():
        if _UNUSED.match(key) or _ENCODER_EXTRA.match(key):
            continue
        if shared and key.startswith("t2_base."):
            continue  # a second name of the shared encoder
        ours = _our_key(key)
        if ours is None:
            unknown.append(key)
            continue
        if ours in source_of:
            raise WeightsError(f"{key!r} and {source_of[ours]!r} both map to {ours!r}")
        mapped[ours] = value
        source_of[ours] = key
    if unknown:
        raise WeightsError(
            f"not a state dict of the authors' PyTorch DSIFN: {len(unknown)} unknown key(s), "
            f"e.g. {', '.join(repr(k) for k in unknown[:3])}"
        )
    return mapped, source_of


def _check_complete(
    mapped: dict[str, Tensor], source_of: Mapping[str, str], options: Mapping[str, Any]
) -> None:
    """Refuse missing, extra or misshapen tensors; add BatchNorm counters old files lack."""
    # Shapes and names only: build on the meta device, so nothing is allocated.
    with torch.device("meta"):
        reference = DSIFN(**options, freeze_encoder=False).state_dict()
    for key in reference:
        # Files saved by PyTorch < 0.4.1 have no BatchNorm counters; they do not affect eval.
        if key.endswith("num_batches_tracked") and key not in mapped:
            mapped[key] = torch.zeros((), dtype=torch.long)
    missing = [k for k in reference if k not in mapped]
    if missing:
        names = ", ".join(repr(_their_key(k)) for k in missing[:3])
        raise WeightsError(
            f"the state dict lacks {len(missing)} key(s) of the authors' DSIFN, e.g. {names}"
        )
    for key, target in reference.items():
        if mapped[key].shape != target.shape:
            raise WeightsError(
                f"{source_of.get(key, key)!r} has shape {tuple(mapped[key].shape)}, expected "
                f"{tuple(target.shape)} for the authors' DSIFN with "
                f"{options['in_channels']} input band(s)"
            )
    extra = [k for k in mapped if k not in reference]
    if extra:
        raise WeightsError(
            "not a state dict of the authors' PyTorch DSIFN: unexpected key(s) "
            f"{', '.join(repr(source_of[k]) for k in extra[:3])}"
        )


def read_official_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict file saved from the authors' PyTorch model, safely.

    Args:
        path: A ``torch.save(model.state_dict(), path)`` file.

    Returns:
        The raw state dict (their key names), unwrapped as in :func:`official_to_dsifn`.

    Raises:
        WeightsError: If the file is missing or unreadable, or holds a whole pickled model.
    """
    file = check_input_file(path, "weights file", WeightsError)
    try:
        payload = load_plain(file)  # junk and pickled objects refused in one line of ours
    except CheckpointError as exc:
        raise WeightsError(f"cannot read the authors' PyTorch weights: {exc}") from exc
    return _unwrap_state_dict(payload)


def load_official_pytorch(
    path_or_state_dict: str | os.PathLike[str] | Mapping[str, Any], **options: Any
) -> DSIFN:
    """Build a DSIFN from weights of the authors' PyTorch model.

    In eval mode, ``torch.sigmoid`` of each of the returned model's five outputs equals the
    corresponding output of their model (theirs apply the sigmoid inside); both are finest
    first.

    Args:
        path_or_state_dict: A state dict file (read with ``weights_only=True``) or the state
            dict itself.
        **options: Further :class:`~dsifn.models.dsifn.DSIFNConfig` fields, e.g.
            ``freeze_encoder=False`` to fine-tune both encoders as their file does; they must not
            contradict the options the weights imply. ``encoder_weights`` is ignored: every
            weight comes from the state dict.

    Returns:
        The model, in eval mode on the CPU, with ``checkpoint_meta["source"]`` naming the
        origin.

    Raises:
        WeightsError: If the file or dict is not the authors' DSIFN.
    """
    if isinstance(path_or_state_dict, Mapping):
        raw: Mapping[str, Any] = path_or_state_dict
        source = "official PyTorch state dict"
    else:
        raw = read_official_state_dict(path_or_state_dict)
        source = f"official PyTorch weights {Path(path_or_state_dict).name}"
    state, implied = official_to_dsifn(raw)
    clash = {k: v for k, v in options.items() if k in implied and implied[k] != v}
    if clash:
        raise WeightsError(
            "options contradict the weights: "
            + ", ".join(f"{k}={v!r} (weights imply {implied[k]!r})" for k, v in clash.items())
        )
    options.pop("encoder_weights", None)  # every weight comes from the state dict
    model = DSIFN(**{**implied, **options})
    model.load_state_dict(state, strict=True)
    model.checkpoint_meta = {"source": source}
    return model.eval()
