"""The file API: read a Keras ``.h5`` with h5py, build a DSIFN from it, write a checkpoint.

h5py is the only reader: neither Keras nor TensorFlow is needed to convert the authors' file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.errors import WeightsError
from dsifn.interop.keras_h5.graph import short
from dsifn.interop.keras_h5.plan import KerasPlan, config_from_plan, plan_from_config
from dsifn.interop.keras_h5.weights import KerasLayerWeights, convert_weights
from dsifn.models.dsifn import DSIFN

__all__ = ["convert_keras_h5", "load_keras_h5", "read_keras_h5"]

# Every layer's arrays as arrays[layer][owner][role] (see _layer_arrays for the owner).
_FileArrays = dict[str, dict[str, KerasLayerWeights]]


def convert_keras_h5(
    source: str | os.PathLike[str], output: str | os.PathLike[str], *, overwrite: bool = False
) -> DSIFN:
    """Convert a Keras ``.h5`` DSIFN into a dsifn checkpoint file (written atomically).

    Args:
        source: The Keras model file.
        output: The checkpoint to write (``.pt``).
        overwrite: Replace an existing output.

    Returns:
        The converted model.
    """
    from dsifn.io.atomic import check_output_path
    from dsifn.models.checkpoint import save_checkpoint

    check_output_path(output, overwrite=overwrite)  # fail before the slow part
    model = load_keras_h5(source)
    save_checkpoint(output, model, meta=model.checkpoint_meta, overwrite=overwrite)
    return model


def load_keras_h5(path: str | os.PathLike[str]) -> DSIFN:
    """Build a ``"keras"``-variant :class:`DSIFN` from the authors' Keras ``.h5`` model file.

    Args:
        path: A Keras ``model.save`` file of DSIFN (Keras 2.2.4 or Keras 3 legacy HDF5).

    Returns:
        The model in eval mode; ``model.checkpoint_meta`` records source, preprocessing
        ("caffe"), tile size, threshold 0.5 and the output names, coarse to fine.

    Raises:
        WeightsError: If the file is not a DSIFN Keras model or its weights do not fit.
    """
    config, arrays, attributes = read_keras_h5(path)
    plan = plan_from_config(config)
    weights = _plan_weights(plan, arrays)
    model = DSIFN(config_from_plan(plan))
    state = convert_weights(plan, weights, model.state_dict())
    model.load_state_dict(state, strict=True)
    model.eval()
    # The authors trained on DSIFN-CD: 8-bit RGB tiles of 512 x 512, read as they are.
    contract = InputContract(
        band_count=model.config.in_channels,
        normalization=model.config.input_normalization,
        tile_size=plan.input_size,
    )
    model.checkpoint_meta = {
        CONTRACT_KEY: contract.to_dict(),
        "source": Path(path).name,
        "preprocessing": "caffe",
        "tile_size": plan.input_size,
        "threshold": 0.5,
        "keras_outputs": [s.output for s in plan.stages],
        "keras_version": attributes.get("keras_version", "unknown"),
        "conversion_notes": list(plan.notes),
    }
    return model


def read_keras_h5(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any], dict[str, dict[str, KerasLayerWeights]], dict[str, str]]:
    """Read a Keras ``model.save`` HDF5 file with h5py.

    Args:
        path: The ``.h5`` file.

    Returns:
        ``(model_config, arrays, attributes)``: the parsed graph; every layer's arrays as
        ``arrays[layer][owner][role]``; the file's ``keras_version`` and ``backend``.

    Raises:
        WeightsError: If the file is not HDF5 or not a full Keras model.
    """
    import h5py

    from dsifn.io.atomic import check_input_file

    file = check_input_file(path, "Keras file", WeightsError)
    try:
        handle = h5py.File(file, "r")
    except OSError as exc:
        raise WeightsError(f"{file} is not an HDF5 file ({short(str(exc), 80)})") from exc
    try:
        with handle:
            return _read_open_file(handle, file)
    except OSError as exc:  # a damaged dataset or attribute, met while reading
        raise WeightsError(f"{file} is a damaged HDF5 file ({short(str(exc), 80)})") from exc


# ----------------------------------------------------------------------------- reading


def _read_open_file(handle: Any, file: Path) -> tuple[dict[str, Any], _FileArrays, dict[str, str]]:
    import h5py

    config = _model_config(handle, file)
    weights = handle.get("model_weights")
    if not isinstance(config, dict) or not isinstance(weights, h5py.Group):
        raise WeightsError(f"{file} holds no Keras model graph with weights")
    attributes = {
        key: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v))
        for key in ("keras_version", "backend")
        if (v := handle.attrs.get(key)) is not None
    }
    arrays = {
        name: _layer_arrays(group)
        for name, group in weights.items()
        if isinstance(group, h5py.Group) and "weight_names" in group.attrs
    }
    return config, arrays, attributes


def _model_config(handle: Any, file: Path) -> Any:
    """The parsed JSON of the file's ``model_config`` attribute (the model graph)."""
    raw = handle.attrs.get("model_config")
    if raw is None:
        raise WeightsError(
            f"{file} has no 'model_config' attribute: it is not a full Keras model file "
            "(a save_weights file or other HDF5 data); convert the model.save() file"
        )
    try:
        # h5py gives text attributes as str, fixed-length ones as bytes, opaque ones as void.
        if isinstance(raw, np.void):
            raw = raw.tobytes()
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        return json.loads(text)
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{file}: model_config is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{file}: model_config is not JSON ({exc})") from exc


def _layer_arrays(group: Any) -> dict[str, KerasLayerWeights]:
    """Arrays of one ``model_weights/<layer>`` group by owner, then role.

    The owner is the name scope before the role ("block1_conv1" in a nested model's
    "block1_conv1/kernel:0"); for a plain layer it is the layer's own scope.
    """
    import h5py

    found: dict[str, KerasLayerWeights] = {}
    layer = str(group.name).rsplit("/", 1)[-1]
    names = np.atleast_1d(group.attrs["weight_names"])
    for raw in names:
        try:
            name = raw.decode() if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError as exc:
            raise WeightsError(f"layer {layer!r} has a weight name that is not UTF-8") from exc
        array = group.get(name)
        if not isinstance(array, h5py.Dataset):
            raise WeightsError(
                f"layer {layer!r} lists weight {name!r}, but the file holds no such array"
            )
        try:
            values = np.asarray(array, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"weight {name!r} of layer {layer!r} is not numeric") from exc
        parts = name.split("/")
        role = parts[-1].split(":")[0]
        owner = parts[-2] if len(parts) >= 2 else ""
        found.setdefault(owner, {})[role] = values
    return found


# ----------------------------------------------------------------------------- arrays by layer


def _plan_weights(plan: KerasPlan, arrays: _FileArrays) -> dict[str, KerasLayerWeights]:
    """The arrays :func:`convert_weights` reads: by layer, the encoder's by model and conv."""
    # A plain layer's arrays sit under one owner scope (its name, or another in Keras 2).
    weights: dict[str, KerasLayerWeights] = {
        name: {role: a for owned in by_owner.values() for role, a in owned.items()}
        for name, by_owner in arrays.items()
        if name != plan.encoder and name not in plan.encoder_copies
    }
    encoder = _encoder_weights(plan.encoder, plan.encoder_convs, arrays.get(plan.encoder, {}))
    for name, convs in plan.encoder_copies.items():
        # The tap models share VGG16's layers, so their stored arrays must be the same ones.
        copies = _encoder_weights(name, convs, arrays.get(name, {}))
        for conv, main_conv in zip(convs, plan.encoder_convs, strict=False):  # same order
            copy, original = copies[f"{name}/{conv}"], encoder[f"{plan.encoder}/{main_conv}"]
            if any(r not in original or not np.array_equal(copy[r], original[r]) for r in copy):
                raise WeightsError(
                    f"nested models {plan.encoder!r} and {name!r} hold different VGG16 weights"
                )
    weights.update(encoder)
    return weights


def _encoder_weights(
    model: str, convs: Sequence[str], arrays: Mapping[str, KerasLayerWeights]
) -> dict[str, KerasLayerWeights]:
    """A nested encoder model's arrays by ``"<model>/<conv>"``, matched by name, else by order."""
    if all(name in arrays for name in convs):
        return {f"{model}/{n}": arrays[n] for n in convs}
    # Name scopes can differ from layer names (block1_conv1_1); Keras saves in layer order.
    owners = list(arrays)
    if len(owners) != len(convs):
        raise WeightsError(
            f"the VGG16 model {model!r} stores weights of {len(owners)} layers, expected "
            f"{len(convs)}"
        )
    return {f"{model}/{n}": arrays[o] for n, o in zip(convs, owners, strict=True)}
