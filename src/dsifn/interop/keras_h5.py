"""Convert the authors' released Keras ``.h5`` model into a dsifn checkpoint, with h5py alone.

The only trained DSIFN weights the authors published are a Keras 2.2.4 ``model.save`` file:
an HDF5 file whose attribute ``model_config`` is the JSON graph of a functional model and whose
group ``model_weights/<layer>/`` holds each layer's arrays (listed in order by the attribute
``weight_names``). The VGG16 trunk sits in nested sub-models applied to both dates: in the
authors' file five of them (input to block5_conv3, to block4_conv3, ...) sharing VGG16's layers.

Layers are identified by their place in the graph, never by their auto-generated names
(``conv2d_17`` in one Keras run is ``conv2d_5`` in another):

* the nested models fed by the inputs hold the trunk; the convolutions in graph order are
  VGG16's, and each output is a tap before a max-pool (level = pools passed); the model with
  all 13 convolutions gives the weights, the others must hold the same arrays;
* a concatenation that takes both dates' trunk features at one level starts a decoder stage;
  its input order (decoder state, T1, T2 in any order) is read and the channels permuted;
* every other layer belongs to the stage of its latest stage concatenation: the dense pair of
  the channel attention, 3x3 conv -> PReLU -> BatchNorm blocks, the 7x7 spatial-attention conv
  (whose [mean, max] input order is read from the pooling layers), the BatchNorm after it,
  the 1x1 side head (and the model output it feeds) and the transposed convolution that
  upsamples for the next stage.

Keras 3's legacy ``.h5`` files (``Functional``, ``keras_history`` tensors, weight names without
``:0``) are read as well. The pure part (:func:`plan_from_config`, :func:`convert_weights`)
works on the JSON and on arrays; :func:`read_keras_h5` does the file reading.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dsifn.contract import CONTRACT_KEY, InputContract
from dsifn.errors import DSIFNError, WeightsError
from dsifn.models.dsifn import DSIFN, DSIFNConfig
from dsifn.models.normalization import CAFFE_BGR
from dsifn.models.vgg import VGG16_LAYOUT

__all__ = [
    "KerasLayerWeights",
    "KerasPlan",
    "convert_keras_h5",
    "convert_weights",
    "load_keras_h5",
    "plan_from_config",
    "read_keras_h5",
]

# Arrays of one Keras layer by role ("kernel", "bias", "gamma", "alpha", ...).
KerasLayerWeights = dict[str, np.ndarray]

_MODEL_CLASSES = {"Model", "Functional"}
_INPUT_CLASSES = {"InputLayer"}


@dataclass(frozen=True)
class _Ref:
    """One tensor of the graph: output ``tensor`` of call ``node`` of layer ``layer``."""

    layer: str
    node: int
    tensor: int


@dataclass
class _Layer:
    name: str
    class_name: str
    config: dict[str, Any]
    nodes: list[list[_Ref]]  # inputs of each call of the layer

    @property
    def inputs(self) -> list[_Ref]:
        """Inputs of every call, flattened."""
        return [ref for node in self.nodes for ref in node]


@dataclass(frozen=True)
class _Graph:
    layers: dict[str, _Layer]
    inputs: list[_Ref]
    outputs: list[_Ref]

    def consumers(self, name: str) -> list[_Layer]:
        return [lay for lay in self.layers.values() if any(r.layer == name for r in lay.inputs)]


@dataclass
class StagePlan:
    """Keras layer names of one decoder stage, coarsest stage first."""

    concat_order: tuple[str, ...]  # sources of the stage input, e.g. ("up", "t1", "t2")
    attention: tuple[str, str] | None  # (first, second) dense layer of the channel attention
    blocks: list[tuple[str, str, str]]  # (conv, prelu, batchnorm) of each conv block
    spatial_conv: str  # 7x7 convolution of the spatial attention
    spatial_order: tuple[str, str]  # what its two input channels are: ("mean", "max") or reverse
    norm: str | None  # BatchNorm after the spatial attention
    head: str  # 1x1 side-output convolution
    output: str  # name of the model output the head feeds
    up: str | None  # transposed convolution that upsamples this stage's state for the next


@dataclass
class KerasPlan:
    """Where each part of DSIFN sits in a Keras model: the result of reading its graph."""

    input_size: int  # side of the square input
    in_channels: int  # bands per date
    trunk: str  # name of the nested VGG16 model with all 13 convolutions
    trunk_convs: list[str]  # its 13 convolutions, input first
    trunk_copies: dict[str, list[str]]  # other nested models sharing VGG16's layers: convs
    stages: list[StagePlan]  # coarsest (stride 16) first
    dropout: float | None  # rate of the decoder's Dropout layers, if all equal
    notes: list[str] = field(default_factory=list)  # what was assumed rather than read

    @property
    def stage1_channel_attention(self) -> bool:
        """Whether the coarsest stage has channel attention."""
        return self.stages[0].attention is not None


# ----------------------------------------------------------------------------- graph parsing


def _tensor_refs(value: Any) -> Iterator[_Ref]:
    """Yield the tensors named in a Keras 3 node's ``args``, in order."""
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            name, node, tensor = value["config"]["keras_history"]
            yield _Ref(str(name), int(node), int(tensor))
        else:
            for item in value.values():
                yield from _tensor_refs(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensor_refs(item)


def _parse_node(node: Any) -> list[_Ref]:
    if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
        return list(_tensor_refs(node.get("args", [])))
    # Keras 2 / tf.keras: [[layer, node_index, tensor_index, kwargs], ...]
    refs = []
    for item in node:
        if not isinstance(item, list | tuple) or len(item) < 3:
            raise WeightsError(f"unreadable inbound node {item!r} in the model graph")
        refs.append(_Ref(str(item[0]), int(item[1]), int(item[2])))
    return refs


def _parse_refs(value: Any) -> list[_Ref]:
    if not value:
        return []
    if isinstance(value[0], str):  # a single [name, node, tensor] (Keras 3, one input)
        value = [value]
    return [_Ref(str(v[0]), int(v[1]), int(v[2])) for v in value]


def _parse_graph(config: Mapping[str, Any]) -> _Graph:
    if not isinstance(config, Mapping) or not isinstance(config.get("layers"), list):
        raise WeightsError("the model graph is not a Keras functional model (no list of layers)")
    try:
        layers = {}
        for index, entry in enumerate(config["layers"]):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("config", {}), Mapping):
                raise WeightsError(
                    f"layer {index} of the model graph is not an object with a config: "
                    f"{_short(entry)}"
                )
            name = entry.get("name") or entry["config"]["name"]
            nodes = [_parse_node(node) for node in entry.get("inbound_nodes", [])]
            layers[str(name)] = _Layer(
                str(name), str(entry["class_name"]), entry.get("config", {}), nodes
            )
        return _Graph(
            layers, _parse_refs(config["input_layers"]), _parse_refs(config["output_layers"])
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise WeightsError(f"the model graph is not a Keras functional model ({exc})") from exc


def _ancestors(graph: _Graph) -> dict[str, set[str]]:
    """Every layer's ancestors (by layer, over all its calls)."""
    memo: dict[str, set[str]] = {}

    def visit(name: str, path: tuple[str, ...]) -> set[str]:
        if name in memo:
            return memo[name]
        if name in path:
            raise WeightsError(f"the model graph has a cycle through {name!r}")
        found: set[str] = set()
        for ref in graph.layers[name].inputs:
            if ref.layer not in graph.layers:
                raise WeightsError(f"layer {name!r} reads unknown layer {ref.layer!r}")
            found.add(ref.layer)
            found |= visit(ref.layer, (*path, name))
        memo[name] = found
        return found

    for name in graph.layers:
        visit(name, ())
    return memo


def _pair(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def _input_shape(layer: _Layer) -> list[Any]:
    cfg = layer.config
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if not shape:
        raise WeightsError(f"input layer {layer.name!r} records no shape")
    return list(shape)


# ----------------------------------------------------------------------------- trunk


# Index, among VGG16's 13 convolutions, of the last one before each max-pool (the taps).
_TAP_CONVS = (1, 3, 6, 9, 12)


def _trunk_plan(sub: _Graph, name: str) -> tuple[list[str], list[int]]:
    """A nested trunk model's convolutions in order and, per output index, its tap level.

    The authors' file has five such models (input to block5_conv3, to block4_conv3, ...) that
    share VGG16's layers; a single model with five outputs is read the same way.
    """
    ancestors = _ancestors(sub)
    convs = [n for n, lay in sub.layers.items() if lay.class_name == "Conv2D"]
    convs.sort(key=lambda n: len(ancestors[n]))
    widths = [w for w in VGG16_LAYOUT if isinstance(w, int)]
    found = [sub.layers[n].config.get("filters") for n in convs]
    if not found or found != widths[: len(found)]:
        raise WeightsError(f"nested model {name!r} is not VGG16's trunk: conv widths {found}")
    for n in convs:
        cfg = sub.layers[n].config
        if _pair(cfg.get("kernel_size")) != (3, 3) or cfg.get("activation") != "relu":
            raise WeightsError(f"trunk convolution {n!r} is not a 3x3 ReLU convolution")
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise WeightsError("only channels_last Keras models can be converted")
    levels = []
    for ref in sub.outputs:
        index = convs.index(ref.layer) if ref.layer in convs else -1
        if index not in _TAP_CONVS:
            raise WeightsError(
                f"output {ref.layer!r} of {name!r} is not a VGG16 tap (the last ReLU "
                "convolution before a max-pool)"
            )
        pools = sum(sub.layers[a].class_name == "MaxPooling2D" for a in ancestors[ref.layer])
        if pools != _TAP_CONVS.index(index):
            raise WeightsError(f"{name!r} has max-pools in unexpected places")
        levels.append(_TAP_CONVS.index(index))
    return convs, levels


# ----------------------------------------------------------------------------- decoder


def _pool_kind(layer: _Layer) -> str | None:
    """Which pooling a layer does over channels (Lambda, TFOpLambda): "mean", "max" or None.

    Keras stores a Lambda's function as marshalled bytecode (base64) and a TFOpLambda's as a
    name; the names the code calls (``K.mean``, ``reduce_max``...) appear in either.
    """
    blobs = []
    for text in _strings(layer.config):
        packed = "".join(text.split())
        try:
            # Long base64 strings are code: search the decoded bytes, never the letters of
            # the encoding (which can spell "max" by chance).
            if len(packed) < 24:
                raise ValueError("too short to be code")
            blobs.append(base64.b64decode(packed, validate=True))
        except (binascii.Error, ValueError):
            blobs.append(text.lower().encode())
    joined = b"\n".join(blobs)
    has_mean = b"mean" in joined or b"average" in joined
    has_max = b"max" in joined
    if has_mean != has_max:
        return "mean" if has_mean else "max"
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _sole_consumer(graph: _Graph, name: str, classes: set[str]) -> _Layer | None:
    found = [lay for lay in graph.consumers(name) if lay.class_name in classes]
    return found[0] if len(found) == 1 else None


def _activation_after(graph: _Graph, layer: _Layer) -> tuple[str, _Layer]:
    """The activation applied to a layer's output (in its config or by a following layer)."""
    act = str(layer.config.get("activation", "linear"))
    if act != "linear":
        return act, layer
    nxt = _sole_consumer(graph, layer.name, {"Activation"})
    if nxt is not None:
        return str(nxt.config.get("activation")), nxt
    return act, layer


def _stage_plan(
    graph: _Graph,
    names: Sequence[str],
    concat_order: tuple[str, ...],
    output_of: Mapping[str, str],
    depth: Mapping[str, int],
    notes: list[str],
    index: int,
) -> StagePlan:
    where = f"decoder stage {index + 1}"
    by_class: dict[str, list[str]] = {}
    for n in sorted(names, key=lambda n: depth[n]):
        by_class.setdefault(graph.layers[n].class_name, []).append(n)

    dense = by_class.get("Dense", [])
    attention: tuple[str, str] | None = None
    if dense:
        if len(dense) != 2:
            raise WeightsError(f"{where}: expected 2 dense layers (channel attention)")
        first, second = dense  # ordered by depth: the first feeds the second
        if not any(r.layer == first for r in graph.layers[second].inputs):
            raise WeightsError(f"{where}: the channel-attention dense layers are not chained")
        attention = (first, second)

    convs = by_class.get("Conv2D", [])
    blocks, spatial, heads = [], [], []
    for n in convs:
        cfg = graph.layers[n].config
        kernel, filters = _pair(cfg.get("kernel_size")), cfg.get("filters")
        if kernel == (3, 3):
            prelu = _sole_consumer(graph, n, {"PReLU"})
            norm = prelu and _sole_consumer(graph, prelu.name, {"BatchNormalization"})
            if prelu is None or norm is None or cfg.get("activation", "linear") != "linear":
                raise WeightsError(f"{where}: conv block {n!r} is not conv -> PReLU -> BatchNorm")
            blocks.append((n, prelu.name, norm.name))
        elif kernel == (7, 7) and filters == 1:
            spatial.append(n)
        elif kernel == (1, 1) and filters == 1:
            heads.append(n)
        else:
            raise WeightsError(f"{where}: unexpected {kernel} convolution {n!r}")
    if not blocks or len(spatial) != 1 or len(heads) != 1:
        raise WeightsError(
            f"{where}: expected conv blocks, one spatial-attention and one side-output "
            f"convolution; found {len(blocks)}, {len(spatial)}, {len(heads)}"
        )

    sa = graph.layers[spatial[0]]
    if sa.config.get("use_bias", True):
        raise WeightsError(f"{where}: the spatial-attention convolution has a bias")
    if _activation_after(graph, sa)[0] != "sigmoid":
        raise WeightsError(f"{where}: the spatial-attention map is not a sigmoid")
    pooled = sa.nodes[0] if len(sa.nodes) == 1 else []
    pool_cat = graph.layers[pooled[0].layer] if len(pooled) == 1 else None
    kinds: list[str | None] = []
    if pool_cat is not None and pool_cat.class_name == "Concatenate":
        kinds = [_pool_kind(graph.layers[r.layer]) for r in pool_cat.nodes[0]]
    if len(kinds) != 2:
        raise WeightsError(f"{where}: the spatial attention does not pool two channel maps")
    if None in kinds:
        # One pooling layer readable is enough: the other is then the other kind.
        known = [k for k in kinds if k is not None]
        if known:
            other = "max" if known[0] == "mean" else "mean"
            kinds = [k or other for k in kinds]
        else:
            kinds = ["mean", "max"]
            notes.append(f"{where}: spatial-attention pooling order assumed [mean, max]")
    if sorted(kinds) != ["max", "mean"]:  # type: ignore[type-var]
        raise WeightsError(f"{where}: spatial attention pools {kinds}, not mean and max")
    spatial_order = (str(kinds[0]), str(kinds[1]))

    for n in by_class.get("BatchNormalization", []):
        # The "keras" variant is built with Keras's default epsilon; another would not fit.
        if abs(float(graph.layers[n].config.get("epsilon", 1e-3)) - 1e-3) > 1e-9:
            raise WeightsError(f"{where}: BatchNorm {n!r} has epsilon other than 1e-3")
    block_norms = {b[2] for b in blocks}
    norms = [n for n in by_class.get("BatchNormalization", []) if n not in block_norms]
    if len(norms) > 1:
        raise WeightsError(f"{where}: more than one BatchNorm after the spatial attention")

    head = graph.layers[heads[0]]
    act, last = _activation_after(graph, head)
    if act != "sigmoid" or last.name not in output_of:
        raise WeightsError(f"{where}: side output {head.name!r} is not a sigmoid model output")

    ups = by_class.get("Conv2DTranspose", [])
    if len(ups) > 1:
        raise WeightsError(f"{where}: more than one transposed convolution")
    for n in ups:
        cfg = graph.layers[n].config
        if _pair(cfg.get("kernel_size")) != (2, 2) or _pair(cfg.get("strides")) != (2, 2):
            raise WeightsError(f"{where}: transposed convolution {n!r} is not 2x2 stride 2")
    return StagePlan(
        concat_order=concat_order,
        attention=attention,
        blocks=blocks,
        spatial_conv=spatial[0],
        spatial_order=spatial_order,
        norm=norms[0] if norms else None,
        head=heads[0],
        output=output_of[last.name],
        up=ups[0] if ups else None,
    )


def plan_from_config(model_config: Mapping[str, Any]) -> KerasPlan:
    """Locate every part of DSIFN in a Keras model's JSON graph.

    Args:
        model_config: The parsed ``model_config`` attribute of a Keras ``.h5`` file.

    Returns:
        The plan: trunk, and per decoder stage (coarsest first) the Keras layer names.

    Raises:
        WeightsError: If the graph is not DSIFN's, or is malformed (a layer setting of the
            wrong type, say).
    """
    if not isinstance(model_config, Mapping):
        raise WeightsError(f"the model graph is a {type(model_config).__name__}, not an object")
    try:
        return _plan_from_config(model_config)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as exc:
        # The JSON comes from an untrusted file: a value of the wrong type anywhere in it is
        # a malformed graph, never a bug to report with a traceback.
        if isinstance(exc, DSIFNError):
            raise
        raise WeightsError(
            "the model graph is malformed: a layer setting is missing or of the wrong type "
            f"({type(exc).__name__}: {_short(str(exc), 80)})"
        ) from exc


def _short(value: Any, limit: int = 40) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _plan_from_config(model_config: Mapping[str, Any]) -> KerasPlan:
    if model_config.get("class_name") not in _MODEL_CLASSES:
        raise WeightsError(
            f"not a Keras functional model (class {model_config.get('class_name')!r})"
        )
    graph = _parse_graph(model_config.get("config", {}))
    notes: list[str] = []
    inputs = [graph.layers.get(r.layer) for r in graph.inputs]
    if len(inputs) != 2 or any(i is None or i.class_name not in _INPUT_CLASSES for i in inputs):
        raise WeightsError(f"DSIFN takes two images; this model has {len(inputs)} input(s)")
    shapes = [_input_shape(i) for i in inputs if i is not None]
    if shapes[0] != shapes[1] or len(shapes[0]) != 4:
        raise WeightsError(f"the two inputs differ or are not images: {shapes}")
    _, height, width, bands = shapes[0]
    if height is None or height != width or height % 16:
        raise WeightsError(
            f"input shape {shapes[0][1:]} is not a fixed square with a side divisible by 16"
        )
    date_of_input = {r.layer: i for i, r in enumerate(graph.inputs)}

    trunks = [lay for lay in graph.layers.values() if lay.class_name in _MODEL_CLASSES]
    if not trunks:
        raise WeightsError("no nested VGG16 model: this is not the authors' DSIFN")
    # (trunk model, call, output index) -> (date, level) of every trunk feature map.
    features: dict[tuple[str, int, int], tuple[int, int]] = {}
    trunk_convs: dict[str, list[str]] = {}
    for trunk in trunks:
        convs, tap_levels = _trunk_plan(_parse_graph(trunk.config), trunk.name)
        trunk_convs[trunk.name] = convs
        dates = []
        for node_index, node in enumerate(trunk.nodes):
            if len(node) != 1 or node[0].layer not in date_of_input:
                raise WeightsError(f"the VGG16 model {trunk.name!r} must take the inputs directly")
            dates.append(date_of_input[node[0].layer])
            for tensor, level in enumerate(tap_levels):
                features[(trunk.name, node_index, tensor)] = (dates[-1], level)
        if sorted(dates) != [0, 1]:
            raise WeightsError(f"the VGG16 model {trunk.name!r} must be applied once to each date")
    main_trunk = max(trunk_convs, key=lambda n: len(trunk_convs[n]))
    if len(trunk_convs[main_trunk]) != _TAP_CONVS[-1] + 1:
        raise WeightsError("no nested model holds all 13 VGG16 convolutions")

    output_of = {r.layer: r.layer for r in graph.outputs}
    ancestors = _ancestors(graph)
    depth = {n: len(a) for n, a in ancestors.items()}

    # Stage concatenations: they read both dates' trunk features at one level.
    stage_concats: dict[int, tuple[_Layer, tuple[str, ...]]] = {}
    for lay in graph.layers.values():
        if lay.class_name != "Concatenate" or len(lay.nodes) != 1:
            continue
        sources: list[str] = []
        levels = set()
        for ref in lay.nodes[0]:
            key = (ref.layer, ref.node, ref.tensor)
            if key in features:
                date, level = features[key]
                sources.append(f"t{date + 1}")
                levels.add(level)
            else:
                sources.append("up")
        if "t1" not in sources:
            continue
        if sorted(sources) not in (["t1", "t2"], ["t1", "t2", "up"]) or len(levels) != 1:
            raise WeightsError(f"concatenation {lay.name!r} does not fuse one scale of both dates")
        if lay.config.get("axis", -1) not in (-1, 3):
            raise WeightsError(f"concatenation {lay.name!r} is not along channels")
        level = levels.pop()
        if level in stage_concats:
            raise WeightsError(f"two decoder stages fuse trunk level {level}")
        stage_concats[level] = (lay, tuple(sources))
    if sorted(stage_concats) != list(range(5)):
        raise WeightsError(
            f"expected 5 decoder stages, one per VGG16 tap; found levels {sorted(stage_concats)}"
        )
    order = [stage_concats[level] for level in range(4, -1, -1)]  # coarsest first
    for i, (lay, stage_sources) in enumerate(order):
        if ("up" in stage_sources) != (i > 0):
            raise WeightsError(f"decoder stage {i + 1} ({lay.name!r}) has the wrong inputs")

    # Each decoder layer belongs to the stage of its latest stage-concatenation ancestor.
    concat_stage = {lay.name: i for i, (lay, _) in enumerate(order)}
    members: list[list[str]] = [[] for _ in order]
    for name, anc in ancestors.items():
        stages = [concat_stage[a] for a in anc if a in concat_stage]
        if name in concat_stage:
            continue
        if stages:
            members[max(stages)].append(name)
        elif graph.layers[name].class_name not in {*_INPUT_CLASSES, *_MODEL_CLASSES}:
            raise WeightsError(f"layer {name!r} sits between the inputs and the VGG16 trunk")

    plans = [
        _stage_plan(graph, members[i], src, output_of, depth, notes, i)
        for i, (_, src) in enumerate(order)
    ]
    if plans[-1].up is not None or any(p.up is None for p in plans[:-1]):
        raise WeightsError("every decoder stage but the last must end in a transposed conv")
    rates = {
        float(graph.layers[n].config.get("rate", 0.0))
        for group in members
        for n in group
        if graph.layers[n].class_name == "Dropout"
    }
    used = {*trunk_convs, *concat_stage}
    for p in plans:
        used |= {*(p.attention or ()), p.spatial_conv, p.head}
        used |= {n for n in (p.norm, p.up) if n is not None}
        used |= {n for block in p.blocks for n in block}
    weighted = {"Conv2D", "Conv2DTranspose", "Dense", "PReLU", "BatchNormalization"}
    stray = [n for n, lay in graph.layers.items() if lay.class_name in weighted and n not in used]
    if stray:
        raise WeightsError(f"layers with weights that DSIFN does not have: {stray[:3]}")
    return KerasPlan(
        input_size=int(height),
        in_channels=int(bands),
        trunk=main_trunk,
        trunk_convs=trunk_convs[main_trunk],
        trunk_copies={n: c for n, c in trunk_convs.items() if n != main_trunk},
        stages=plans,
        dropout=rates.pop() if len(rates) == 1 else None,
        notes=notes,
    )


# ----------------------------------------------------------------------------- weights


def config_from_plan(plan: KerasPlan) -> DSIFNConfig:
    """The dsifn configuration of the network a plan describes (``"keras"`` variant)."""
    if any(p.norm is None for p in plan.stages[:-1]) or plan.stages[-1].norm is not None:
        raise WeightsError(
            "the Keras DSIFN has a BatchNorm after the spatial attention of stages 1-4 and none "
            "after stage 5's; this file differs"
        )
    return DSIFNConfig(
        in_channels=plan.in_channels,
        variant="keras",
        input_size=plan.input_size,
        stage1_channel_attention=plan.stage1_channel_attention,
        dropout=0.6 if plan.dropout is None else plan.dropout,
        normalization=CAFFE_BGR.for_bands(plan.in_channels),
    )


def _concat_permutation(order: Sequence[str], widths: Mapping[str, int]) -> np.ndarray:
    """Indices into the file's concatenated channels giving dsifn's (up, t1, t2) order."""
    start, offsets = 0, {}
    for source in order:
        offsets[source] = start
        start += widths[source]
    ours = [s for s in ("up", "t1", "t2") if s in order]
    return np.concatenate([offsets[s] + np.arange(widths[s]) for s in ours])


def convert_weights(
    plan: KerasPlan, weights: Mapping[str, KerasLayerWeights], reference: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Map Keras arrays onto a dsifn state dict, converting layouts and checking shapes.

    Args:
        plan: From :func:`plan_from_config`.
        weights: Arrays by layer name; the trunk's by ``"<trunk>/<conv name>"``.
        reference: State dict of the target :class:`DSIFN` (keys and shapes to fill).

    Returns:
        A complete state dict for the target model.

    Raises:
        WeightsError: If an array is missing or has the wrong shape.
    """
    out: dict[str, Tensor] = {}

    def get(layer: str, role: str, fill: tuple[tuple[int, ...], float] | None = None) -> np.ndarray:
        arrays = weights.get(layer, {})
        if role in arrays:
            return np.asarray(arrays[role], dtype=np.float32)
        if fill is not None:  # a layer built without bias / scale / centre
            return np.full(fill[0], fill[1], dtype=np.float32)
        raise WeightsError(f"Keras layer {layer!r} has no {role!r} weights")

    def put(key: str, value: np.ndarray, source: str) -> None:
        target = reference.get(key)
        if target is None:
            raise WeightsError(f"internal: dsifn has no parameter {key!r}")
        if tuple(value.shape) != tuple(target.shape):
            raise WeightsError(
                f"Keras weights {source} have shape {value.shape} (converted), but dsifn's "
                f"{key} needs {tuple(target.shape)}"
            )
        if not np.isfinite(value).all():
            raise WeightsError(f"Keras weights {source} hold NaN or infinite values")
        out[key] = torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype)

    def conv(layer: str, key: str, in_order: np.ndarray | list[int] | None = None) -> None:
        kernel = get(layer, "kernel")
        if kernel.ndim != 4:
            raise WeightsError(f"Keras layer {layer!r} kernel has shape {kernel.shape}")
        # Conv2D (h, w, in, out) -> (out, in, h, w); Conv2DTranspose (h, w, out, in) ->
        # (in, out, h, w): the same axis order, and no spatial flip (the parity test checks).
        w = kernel.transpose(3, 2, 0, 1)
        if in_order is not None:
            w = w[:, in_order]
        put(f"{key}.weight", w, f"{layer}/kernel")
        if f"{key}.bias" in reference:
            bias = get(layer, "bias", ((reference[f"{key}.bias"].shape[0],), 0.0))
            put(f"{key}.bias", bias, f"{layer}/bias")

    def batchnorm(layer: str, key: str) -> None:
        shape = tuple(reference[f"{key}.weight"].shape)
        put(f"{key}.weight", get(layer, "gamma", (shape, 1.0)), f"{layer}/gamma")
        put(f"{key}.bias", get(layer, "beta", (shape, 0.0)), f"{layer}/beta")
        put(f"{key}.running_mean", get(layer, "moving_mean"), f"{layer}/moving_mean")
        put(f"{key}.running_var", get(layer, "moving_variance"), f"{layer}/moving_variance")
        out[f"{key}.num_batches_tracked"] = torch.zeros((), dtype=torch.long)

    conv_index = [i for i, m in enumerate(_features_layout()) if m == "conv"]
    for i, name in enumerate(plan.trunk_convs):
        conv(f"{plan.trunk}/{name}", f"encoder.features.{conv_index[i]}")

    enc_widths = [64, 128, 256, 512, 512]
    previous: int | None = None
    for s, stage in enumerate(plan.stages):
        key = f"stages.{s}"
        level = len(plan.stages) - 1 - s
        widths = {"t1": enc_widths[level], "t2": enc_widths[level], "up": previous or 0}
        perm = _concat_permutation(stage.concat_order, widths)
        if stage.attention is not None:
            fc1, fc2 = stage.attention
            k1, k2 = get(fc1, "kernel"), get(fc2, "kernel")
            if k1.ndim != 2 or k2.ndim != 2:
                raise WeightsError(f"stage {s + 1}: attention dense kernels are not matrices")
            ca = f"{key}.channel_attention"
            if k1.shape[0] != len(perm) or k2.shape[1] != len(perm):
                raise WeightsError(
                    f"stage {s + 1}: attention dense kernels {k1.shape}, {k2.shape} do not fit "
                    f"{len(perm)} channels"
                )
            put(f"{ca}.fc1.weight", k1.T[:, perm, None, None], f"{fc1}/kernel")
            put(f"{ca}.fc1.bias", get(fc1, "bias", ((k1.shape[1],), 0.0)), f"{fc1}/bias")
            put(f"{ca}.fc2.weight", k2.T[perm, :, None, None], f"{fc2}/kernel")
            put(f"{ca}.fc2.bias", get(fc2, "bias", ((k2.shape[1],), 0.0))[perm], f"{fc2}/bias")
        for b, (conv_name, prelu, norm) in enumerate(stage.blocks):
            conv(conv_name, f"{key}.blocks.{b}.0", in_order=perm if b == 0 else None)
            alpha = get(prelu, "alpha")
            if alpha.ndim != 3:
                raise WeightsError(f"PReLU {prelu!r} has slopes of shape {alpha.shape}")
            put(f"{key}.blocks.{b}.1.weight", alpha.transpose(2, 0, 1), f"{prelu}/alpha")
            batchnorm(norm, f"{key}.blocks.{b}.2")
        swap = None if stage.spatial_order == ("mean", "max") else [1, 0]
        conv(stage.spatial_conv, f"{key}.spatial_attention.conv", in_order=swap)
        if stage.norm is not None:
            batchnorm(stage.norm, f"{key}.norm")
        conv(stage.head, f"heads.{s}")
        if stage.up is not None:
            conv(stage.up, f"stages.{s + 1}.up")
        previous = int(reference[f"{key}.blocks.{len(stage.blocks) - 1}.0.weight"].shape[0])

    missing = sorted(set(reference) - set(out))
    if missing:
        raise WeightsError(f"the Keras file does not provide dsifn's {missing[0]} (and others)")
    return out


def _features_layout() -> list[str]:
    """Kind of each module of ``VGG16Encoder.features``: conv, relu, pool."""
    kinds: list[str] = []
    for item in VGG16_LAYOUT:
        kinds += ["pool"] if item == "M" else ["conv", "relu"]
    return kinds


# ----------------------------------------------------------------------------- file I/O


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
        raise WeightsError(f"{file} is not an HDF5 file ({_short(str(exc), 80)})") from exc
    try:
        with handle:
            return _read_open_file(handle, file)
    except OSError as exc:  # a damaged dataset or attribute, met while reading
        raise WeightsError(f"{file} is a damaged HDF5 file ({_short(str(exc), 80)})") from exc


def _read_open_file(
    handle: Any, file: Path
) -> tuple[dict[str, Any], dict[str, dict[str, KerasLayerWeights]], dict[str, str]]:
    import h5py

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
        config = json.loads(text)
    except UnicodeDecodeError as exc:
        raise WeightsError(f"{file}: model_config is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise WeightsError(f"{file}: model_config is not JSON ({exc})") from exc
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


def _trunk_weights(
    model: str, convs: Sequence[str], arrays: Mapping[str, KerasLayerWeights]
) -> dict[str, KerasLayerWeights]:
    """A nested trunk model's arrays by ``"<model>/<conv>"``, matched by name, else by order."""
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
    # A plain layer's arrays sit under one owner scope (its name, or another in Keras 2).
    weights: dict[str, KerasLayerWeights] = {
        name: {role: a for owned in by_owner.values() for role, a in owned.items()}
        for name, by_owner in arrays.items()
        if name != plan.trunk and name not in plan.trunk_copies
    }
    trunk = _trunk_weights(plan.trunk, plan.trunk_convs, arrays.get(plan.trunk, {}))
    for name, convs in plan.trunk_copies.items():
        # The tap models share VGG16's layers, so their stored arrays must be the same ones.
        copies = _trunk_weights(name, convs, arrays.get(name, {}))
        for conv, main_conv in zip(convs, plan.trunk_convs, strict=False):  # same order
            copy, original = copies[f"{name}/{conv}"], trunk[f"{plan.trunk}/{main_conv}"]
            if any(r not in original or not np.array_equal(copy[r], original[r]) for r in copy):
                raise WeightsError(
                    f"nested models {plan.trunk!r} and {name!r} hold different VGG16 weights"
                )
    weights.update(trunk)
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
    from dsifn.io.checkpoint import save_checkpoint

    check_output_path(output, overwrite=overwrite)  # fail before the slow part
    model = load_keras_h5(source)
    save_checkpoint(output, model, meta=model.checkpoint_meta, overwrite=overwrite)
    return model
