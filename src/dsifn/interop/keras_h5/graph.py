"""Graph parsing: a Keras model's JSON graph as layers and tensors, and what its layers do.

Keras 2 / tf.keras write each call's inputs as ``[layer, node, tensor, kwargs]`` lists; Keras 3
writes ``{"args": ..., "kwargs": ...}`` with ``__keras_tensor__`` objects. Both become
:class:`Ref` lists here, so the rest of the reader never sees the difference.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dsifn.errors import WeightsError

__all__ = [
    "INPUT_CLASSES",
    "MODEL_CLASSES",
    "Graph",
    "Layer",
    "Ref",
    "activation_after",
    "ancestors",
    "input_shape",
    "pair",
    "parse_graph",
    "pool_kind",
    "short",
    "sole_consumer",
]

MODEL_CLASSES = {"Model", "Functional"}
INPUT_CLASSES = {"InputLayer"}


@dataclass(frozen=True)
class Ref:
    """One tensor of the graph: output ``tensor`` of call ``node`` of layer ``layer``."""

    layer: str
    node: int
    tensor: int


@dataclass
class Layer:
    """One layer of the graph: its class, its config and the inputs of each of its calls."""

    name: str
    class_name: str
    config: dict[str, Any]
    nodes: list[list[Ref]]  # inputs of each call of the layer

    @property
    def inputs(self) -> list[Ref]:
        """Inputs of every call, flattened."""
        return [ref for node in self.nodes for ref in node]


@dataclass(frozen=True)
class Graph:
    """A functional model's layers by name, and the tensors that are its inputs and outputs."""

    layers: dict[str, Layer]
    inputs: list[Ref]
    outputs: list[Ref]

    def consumers(self, name: str) -> list[Layer]:
        """The layers that read an output of layer ``name``."""
        return [lay for lay in self.layers.values() if any(r.layer == name for r in lay.inputs)]


def short(value: Any, limit: int = 40) -> str:
    """A value as one line of at most ``limit`` characters, for error messages."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


# ----------------------------------------------------------------------------- parsing


def _tensor_refs(value: Any) -> Iterator[Ref]:
    """Yield the tensors named in a Keras 3 node's ``args``, in order."""
    if isinstance(value, Mapping):
        if value.get("class_name") == "__keras_tensor__":
            name, node, tensor = value["config"]["keras_history"]
            yield Ref(str(name), int(node), int(tensor))
        else:
            for item in value.values():
                yield from _tensor_refs(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _tensor_refs(item)


def _parse_node(node: Any) -> list[Ref]:
    if isinstance(node, Mapping):  # Keras 3: {"args": [...], "kwargs": {...}}
        return list(_tensor_refs(node.get("args", [])))
    # Keras 2 / tf.keras: [[layer, node_index, tensor_index, kwargs], ...]
    refs = []
    for item in node:
        if not isinstance(item, list | tuple) or len(item) < 3:
            raise WeightsError(f"unreadable inbound node {item!r} in the model graph")
        refs.append(Ref(str(item[0]), int(item[1]), int(item[2])))
    return refs


def _parse_refs(value: Any) -> list[Ref]:
    if not value:
        return []
    if isinstance(value[0], str):  # a single [name, node, tensor] (Keras 3, one input)
        value = [value]
    return [Ref(str(v[0]), int(v[1]), int(v[2])) for v in value]


def parse_graph(config: Mapping[str, Any]) -> Graph:
    """The graph of a functional model's ``config`` (its layers, input and output layers).

    Raises:
        WeightsError: If the config is not a Keras functional model's.
    """
    if not isinstance(config, Mapping) or not isinstance(config.get("layers"), list):
        raise WeightsError("the model graph is not a Keras functional model (no list of layers)")
    try:
        layers = {}
        for index, entry in enumerate(config["layers"]):
            if not isinstance(entry, Mapping) or not isinstance(entry.get("config", {}), Mapping):
                raise WeightsError(
                    f"layer {index} of the model graph is not an object with a config: "
                    f"{short(entry)}"
                )
            name = entry.get("name") or entry["config"]["name"]
            nodes = [_parse_node(node) for node in entry.get("inbound_nodes", [])]
            layers[str(name)] = Layer(
                str(name), str(entry["class_name"]), entry.get("config", {}), nodes
            )
        return Graph(
            layers, _parse_refs(config["input_layers"]), _parse_refs(config["output_layers"])
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise WeightsError(f"the model graph is not a Keras functional model ({exc})") from exc


# ----------------------------------------------------------------------------- queries


def ancestors(graph: Graph) -> dict[str, set[str]]:
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


def pair(value: Any) -> tuple[int, ...]:
    """A Keras size setting (``3`` or ``[3, 3]``) as a tuple."""
    return tuple(value) if isinstance(value, list | tuple) else (value, value)


def input_shape(layer: Layer) -> list[Any]:
    """The batch shape an input layer records, e.g. ``[None, 512, 512, 3]``."""
    cfg = layer.config
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if not shape:
        raise WeightsError(f"input layer {layer.name!r} records no shape")
    return list(shape)


def sole_consumer(graph: Graph, name: str, classes: set[str]) -> Layer | None:
    """The one layer of one of ``classes`` that reads layer ``name``, or None (none or more)."""
    found = [lay for lay in graph.consumers(name) if lay.class_name in classes]
    return found[0] if len(found) == 1 else None


def activation_after(graph: Graph, layer: Layer) -> tuple[str, Layer]:
    """The activation applied to a layer's output (in its config or by a following layer)."""
    act = str(layer.config.get("activation", "linear"))
    if act != "linear":
        return act, layer
    nxt = sole_consumer(graph, layer.name, {"Activation"})
    if nxt is not None:
        return str(nxt.config.get("activation")), nxt
    return act, layer


def pool_kind(layer: Layer) -> str | None:
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
