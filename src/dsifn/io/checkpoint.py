"""dsifn's own checkpoint format: weights, configuration and package version in one file.

A checkpoint is a ``torch.save``'d dictionary of plain types only, so it loads with
``torch.load(weights_only=True)`` and rebuilds the model with no other input::

    {"format": "dsifn", "format_version": 1, "dsifn_version": "0.1.0",
     "model_config": {...}, "state_dict": {...}, "meta": {...}}

``meta`` holds what the rest of the package records: the decision threshold, training
configuration and history, where converted weights came from, tile size for fixed-size models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dsifn._version import __version__
from dsifn.errors import CheckpointError, ConfigError
from dsifn.io.atomic import atomic_path
from dsifn.models.dsifn import DSIFN, DSIFNConfig

__all__ = [
    "FORMAT",
    "load_checkpoint",
    "model_from_checkpoint",
    "model_with_weights",
    "read_checkpoint",
    "save_checkpoint",
]

FORMAT = "dsifn"
FORMAT_VERSION = 1


def save_checkpoint(
    path: str | os.PathLike[str],
    model: DSIFN,
    *,
    meta: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    **extra: Any,
) -> Path:
    """Write ``model`` as a dsifn checkpoint, atomically.

    Args:
        path: Output file (conventionally ``.pt``).
        model: The network; a ``DistributedDataParallel`` or compiled wrapper is unwrapped.
        meta: Plain-typed metadata (threshold, source, training info).
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
        "model_config": net.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "meta": dict(meta or {}),
        **extra,
    }
    with atomic_path(path, overwrite=overwrite) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a dsifn checkpoint without building the model.

    Args:
        path: The checkpoint file.

    Returns:
        The checkpoint dictionary.

    Raises:
        CheckpointError: If the file is missing, unreadable or not a dsifn checkpoint.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"checkpoint {file} does not exist")
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safety errors all mean "not readable"
        raise CheckpointError(f"{file} is not a readable PyTorch checkpoint: {exc}") from exc
    if not isinstance(payload, Mapping) or payload.get("format") != FORMAT:
        hint = ""
        if isinstance(payload, Mapping) and any(str(k).startswith("t1_base.") for k in payload):
            hint = " (it looks like an official DSIFN state dict: use dsifn.load_official_pytorch)"
        raise CheckpointError(f"{file} is not a dsifn checkpoint{hint}")
    if int(payload.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(
            f"{file} has checkpoint format {payload['format_version']}, newer than this dsifn "
            f"({__version__}) reads; upgrade dsifn"
        )
    for key in ("model_config", "state_dict"):
        if not isinstance(payload.get(key), Mapping):
            raise CheckpointError(f"{file} is not a complete dsifn checkpoint: no {key!r}")
    return dict(payload)


def model_from_checkpoint(payload: Mapping[str, Any], source: str = "checkpoint") -> DSIFN:
    """Build the model described by a checkpoint dictionary and load its weights.

    Args:
        payload: As returned by :func:`read_checkpoint`.
        source: Name used in error messages.

    Returns:
        The model in eval mode, on the CPU.
    """
    try:
        config = DSIFNConfig.from_dict(payload["model_config"])
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{source} has an invalid model configuration: {exc}") from exc
    return model_with_weights(config, payload["state_dict"], source=source)


def model_with_weights(
    config: DSIFNConfig, state_dict: Mapping[str, Any], source: str = "checkpoint"
) -> DSIFN:
    """Build a DSIFN from ``config`` and load ``state_dict`` into it, strictly.

    The encoder's pretrained file is never fetched: the weights come from ``state_dict``.

    Args:
        config: The model configuration (kept as given, ``encoder_weights`` included).
        state_dict: Weights under our module names.
        source: Where the weights come from, for error messages.

    Returns:
        The model in eval mode, on the CPU.

    Raises:
        CheckpointError: If keys are missing or unexpected, or a tensor's shape differs.
    """
    model = DSIFN(config, encoder_weights=None)
    model.config = config  # keep the recorded source of the encoder weights
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


def load_checkpoint(path: str | os.PathLike[str]) -> DSIFN:
    """Rebuild a DSIFN from a dsifn checkpoint.

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
    model.checkpoint_meta = dict(payload.get("meta", {}))
    return model


def unwrap(model: nn.Module) -> DSIFN:
    """Return the DSIFN inside DDP / ``torch.compile`` wrappers."""
    net: Any = model
    while not isinstance(net, DSIFN):
        inner = getattr(net, "module", None) or getattr(net, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"expected a DSIFN (possibly wrapped); got {type(model).__name__}")
        net = inner
    return net
