"""dsifn's own checkpoint format: weights, configuration and package version in one file.

A checkpoint is a ``torch.save``'d dictionary of plain types only, so it loads with
``torch.load(weights_only=True)`` and rebuilds the model with no other input::

    {"format": "dsifn", "format_version": 2, "dsifn_version": "0.2.0",
     "model_config": {"name": "fc_siam_diff", ...}, "state_dict": {...}, "meta": {...}}

``model_config["name"]`` says which network it is (:mod:`dsifn.models.registry`); format 2
added it, and a version-1 checkpoint, which has none, is a DSIFN.

``meta`` holds what the rest of the package records: the input contract
(``meta["input_contract"]``, :mod:`dsifn.contract`; written into every checkpoint, with the
decision threshold), training configuration and history, where converted weights came from.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsifn._version import __version__
from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.errors import CheckpointError, ConfigError
from dsifn.io.atomic import atomic_path, check_input_file
from dsifn.io.plain import MAKE_CHECKPOINT, load_plain
from dsifn.models.registry import (
    ChangeNetwork,
    ModelConfig,
    build_network,
    config_dict,
    is_network,
    model_config,
)

__all__ = [
    "FORMAT",
    "load_checkpoint",
    "load_plain",
    "model_from_checkpoint",
    "model_with_weights",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "dsifn"
FORMAT_VERSION = 2  # 2: model_config records the network's name


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    *,
    meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    **extra: Any,
) -> Path:
    """Write ``model`` as a dsifn checkpoint, atomically.

    Args:
        path: Output file (conventionally ``.pt``).
        model: Any network of the package; a ``DistributedDataParallel`` or compiled wrapper
            is unwrapped.
        meta: Plain-typed metadata (input contract, source, training info).
        overwrite: Replace an existing file.
        **extra: Further top-level plain-typed entries (optimizer state for resuming, say).

    Returns:
        The path written.
    """
    net = unwrap(model)
    payload: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "dsifn_version": __version__,
        "model_config": config_dict(net.config),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "meta": _with_contract(dict(meta or {}), net),
        **extra,
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def _with_contract(meta: dict[str, Any], model: ChangeNetwork) -> dict[str, Any]:
    # Every checkpoint records how its input is made: the one given, else the one its meta
    # implies (a training configuration, or the defaults). The threshold lives in the
    # contract only: a ``meta["threshold"]`` given (the way of dsifn 0.2) moves into it.
    if CONTRACT_KEY not in meta or "threshold" in meta:
        meta[CONTRACT_KEY] = InputContract.from_meta(meta, model.config).to_dict()
    meta.pop("threshold", None)
    return meta


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a dsifn checkpoint without building the model.

    Args:
        path: The checkpoint file.

    Returns:
        The checkpoint dictionary.

    Raises:
        CheckpointError: If the file is missing, unreadable or not a dsifn checkpoint, or one
            of its fields (format version, metadata, decision threshold) is malformed.
    """
    file = check_input_file(path, "checkpoint", CheckpointError)
    payload = load_plain(file)
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        hint = f"; {MAKE_CHECKPOINT}"
        if isinstance(payload, Mapping) and any(str(k).startswith("t1_base.") for k in payload):
            hint = " (it looks like an official DSIFN state dict: use dsifn.load_official_pytorch)"
        elif not isinstance(payload, Mapping):
            hint = f": it holds a {type(payload).__name__}, not a dictionary{hint}"
        raise CheckpointError(f"{file} is not a dsifn checkpoint{hint}")
    version = payload.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(
            f"{file} has a malformed format_version {_short(version)} (a whole number, 1 or more)"
        )
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has checkpoint format {version}, newer than this dsifn "
            f"({__version__}) reads; upgrade dsifn"
        )
    for key in ("model_config", "state_dict"):
        if not isinstance(payload.get(key), Mapping):
            raise CheckpointError(f"{file} is not a complete dsifn checkpoint: no {key!r}")
    meta = payload.get("meta", {})
    if not isinstance(meta, Mapping):
        raise CheckpointError(
            f"{file} has malformed metadata: 'meta' is a {type(meta).__name__}, not a mapping"
        )
    if meta.get("threshold") is not None:
        _check_threshold(meta["threshold"], str(file))
    return dict(payload)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _check_threshold(value: Any, source: str) -> float:
    """The rule of :func:`dsifn.evaluation.scoring.resolve_threshold`: a number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise CheckpointError(
            f"{source} has a malformed decision threshold {_short(value)} in its metadata "
            "(a number from 0 to 1)"
        )
    return float(value)


def model_from_checkpoint(payload: Mapping[str, Any], source: str = "checkpoint") -> ChangeNetwork:
    """Build the model described by a checkpoint dictionary and load its weights.

    Args:
        payload: As returned by :func:`read_checkpoint`.
        source: Name used in error messages.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        CheckpointError: If the model configuration is malformed (a value of the wrong type,
            an unknown key) or the weights do not fit it or are not finite.
    """
    values = payload.get("model_config")
    try:
        config = model_config(values, "model_config")
    except (ConfigError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source} has an invalid model configuration: {exc}") from exc
    state = payload.get("state_dict")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source} is not a complete dsifn checkpoint: no 'state_dict'")
    return model_with_weights(config, state, source=source)


def model_with_weights(
    config: ModelConfig, state_dict: Mapping[str, Any], source: str = "checkpoint"
) -> ChangeNetwork:
    """Build the network of ``config`` and load ``state_dict`` into it, strictly.

    A DSIFN encoder's pretrained file is never fetched: the weights come from ``state_dict``.

    Args:
        config: The model configuration of any network (kept as given, a DSIFN's
            ``encoder_weights`` included).
        state_dict: Weights under our module names.
        source: Where the weights come from, for error messages.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        CheckpointError: If keys are missing or unexpected, or a tensor's shape differs.
    """
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: weight {key!r} is a {type(value).__name__}, not a tensor"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            # NaN or infinite weights give a change map of nodata everywhere, with no word.
            bad = int((~torch.isfinite(value)).sum())
            raise CheckpointError(
                f"{source}: weight {key!r} has {bad} NaN or infinite value(s) of "
                f"{value.numel()}; the model diverged or the file was damaged: use an earlier "
                "checkpoint"
            )
    model = build_network(config, pretrained=False)
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # size mismatch
        lines = str(exc).strip().splitlines()
        detail = next((line.strip() for line in lines if "size mismatch" in line), lines[-1])
        raise CheckpointError(
            f"{source}: weights do not fit the model configuration: {detail}"
        ) from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{source}: weights do not fit the model configuration: "
            f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[:1]}), "
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[:1]})"
        )
    return model.eval()


def load_checkpoint(path: str | os.PathLike[str]) -> ChangeNetwork:
    """Rebuild the network of a dsifn checkpoint (DSIFN or a baseline, as it records).

    Args:
        path: A file written by :func:`save_checkpoint` (or ``dsifn train``/``convert``).

    Returns:
        The model in eval mode, on the CPU, with ``model.checkpoint_meta`` holding the
        checkpoint's ``meta`` dictionary.

    Raises:
        CheckpointError: If the file is not a dsifn checkpoint or its weights do not fit.
    """
    payload = read_checkpoint(path)
    model = model_from_checkpoint(payload, source=str(path))
    model.checkpoint_meta = dict(payload.get("meta") or {})
    return model


def unwrap(model: nn.Module) -> ChangeNetwork:
    """Return the network inside DDP / ``torch.compile`` wrappers."""
    net: Any = model
    while not is_network(net):
        inner = getattr(net, "module", None) or getattr(net, "_orig_mod", None)
        if inner is None:
            raise TypeError(
                f"expected a dsifn network (possibly wrapped); got {type(model).__name__}"
            )
        net = inner
    result: ChangeNetwork = net
    return result
