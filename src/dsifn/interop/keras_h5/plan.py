"""The layer plan: which Keras layers of the authors' graph are which parts of DSIFN.

Layers are identified by their place in the graph, never by their auto-generated names
(``conv2d_17`` in one Keras run is ``conv2d_5`` in another): see :mod:`dsifn.interop.keras_h5`
for the rules. :func:`plan_from_config` reads them in named steps: the two inputs, the nested
VGG16 encoder models, the five stage concatenations, each stage's members, then each stage's
layers by role.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dsifn.errors import DSIFNError, WeightsError
from dsifn.interop.keras_h5.graph import (
    INPUT_CLASSES,
    MODEL_CLASSES,
    Graph,
    Layer,
    activation_after,
    ancestors,
    input_shape,
    pair,
    parse_graph,
    pool_kind,
    short,
    sole_consumer,
)
from dsifn.models.dsifn import DSIFNConfig
from dsifn.models.vgg import VGG16_LAYOUT
from dsifn.normalization import CAFFE_BGR

__all__ = ["KerasPlan", "StagePlan", "config_from_plan", "plan_from_config"]

# Index, among VGG16's 13 convolutions, of the last one before each max-pool (the taps).
_TAP_CONVS = (1, 3, 6, 9, 12)

# (encoder model, call, output index) of an encoder feature map -> (date, level).
_Features = dict[tuple[str, int, int], tuple[int, int]]

# A stage concatenation and the sources of its inputs in order, e.g. ("up", "t1", "t2").
_StageInput = tuple[Layer, tuple[str, ...]]


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
    encoder: str  # name of the nested VGG16 model with all 13 convolutions
    encoder_convs: list[str]  # its 13 convolutions, input first
    encoder_copies: dict[str, list[str]]  # other nested models sharing VGG16's layers: convs
    stages: list[StagePlan]  # coarsest (stride 16) first
    dropout: float | None  # rate of the decoder's Dropout layers, if all equal
    notes: list[str] = field(default_factory=list)  # what was assumed rather than read

    @property
    def stage1_channel_attention(self) -> bool:
        """Whether the coarsest stage has channel attention."""
        return self.stages[0].attention is not None


def plan_from_config(model_config: Mapping[str, Any]) -> KerasPlan:
    """Locate every part of DSIFN in a Keras model's JSON graph.

    Args:
        model_config: The parsed ``model_config`` attribute of a Keras ``.h5`` file.

    Returns:
        The plan: encoder, and per decoder stage (coarsest first) the Keras layer names.

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
            f"({type(exc).__name__}: {short(str(exc), 80)})"
        ) from exc


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


def _plan_from_config(model_config: Mapping[str, Any]) -> KerasPlan:
    if model_config.get("class_name") not in MODEL_CLASSES:
        raise WeightsError(
            f"not a Keras functional model (class {model_config.get('class_name')!r})"
        )
    graph = parse_graph(model_config.get("config", {}))
    size, bands = _input_geometry(graph)
    features, encoder_convs = _encoder_features(graph)
    main = _main_encoder(encoder_convs)
    output_of = {r.layer: r.layer for r in graph.outputs}
    ancestry = ancestors(graph)
    depth = {n: len(a) for n, a in ancestry.items()}
    stage_inputs = _stage_inputs(graph, features)
    members = _stage_members(graph, ancestry, stage_inputs)
    notes: list[str] = []
    plans = [
        _stage_plan(graph, members[i], sources, output_of, depth, notes, i)
        for i, (_, sources) in enumerate(stage_inputs)
    ]
    if plans[-1].up is not None or any(p.up is None for p in plans[:-1]):
        raise WeightsError("every decoder stage but the last must end in a transposed conv")
    dropout = _dropout_rate(graph, members)
    _check_no_stray_weights(graph, {*encoder_convs, *(lay.name for lay, _ in stage_inputs)}, plans)
    return KerasPlan(
        input_size=size,
        in_channels=bands,
        encoder=main,
        encoder_convs=encoder_convs[main],
        encoder_copies={n: c for n, c in encoder_convs.items() if n != main},
        stages=plans,
        dropout=dropout,
        notes=notes,
    )


# ----------------------------------------------------------------------------- inputs, encoder


def _input_geometry(graph: Graph) -> tuple[int, int]:
    """The side of the two square input images and their band count."""
    inputs = [graph.layers.get(r.layer) for r in graph.inputs]
    if len(inputs) != 2 or any(i is None or i.class_name not in INPUT_CLASSES for i in inputs):
        raise WeightsError(f"DSIFN takes two images; this model has {len(inputs)} input(s)")
    shapes = [input_shape(i) for i in inputs if i is not None]
    if shapes[0] != shapes[1] or len(shapes[0]) != 4:
        raise WeightsError(f"the two inputs differ or are not images: {shapes}")
    _, height, width, bands = shapes[0]
    if height is None or height != width or height % 16:
        raise WeightsError(
            f"input shape {shapes[0][1:]} is not a fixed square with a side divisible by 16"
        )
    return int(height), int(bands)


def _encoder_features(graph: Graph) -> tuple[_Features, dict[str, list[str]]]:
    """Every encoder feature map's (date, level), and each nested encoder model's convs."""
    date_of_input = {r.layer: i for i, r in enumerate(graph.inputs)}
    encoders = [lay for lay in graph.layers.values() if lay.class_name in MODEL_CLASSES]
    if not encoders:
        raise WeightsError("no nested VGG16 model: this is not the authors' DSIFN")
    features: _Features = {}
    encoder_convs: dict[str, list[str]] = {}
    for encoder in encoders:
        convs, tap_levels = _encoder_plan(parse_graph(encoder.config), encoder.name)
        encoder_convs[encoder.name] = convs
        dates = []
        for node_index, node in enumerate(encoder.nodes):
            if len(node) != 1 or node[0].layer not in date_of_input:
                raise WeightsError(
                    f"the VGG16 model {encoder.name!r} must take the inputs directly"
                )
            dates.append(date_of_input[node[0].layer])
            for tensor, level in enumerate(tap_levels):
                features[(encoder.name, node_index, tensor)] = (dates[-1], level)
        if sorted(dates) != [0, 1]:
            raise WeightsError(
                f"the VGG16 model {encoder.name!r} must be applied once to each date"
            )
    return features, encoder_convs


def _main_encoder(encoder_convs: Mapping[str, Sequence[str]]) -> str:
    """The nested model that holds all 13 VGG16 convolutions (the others hold a prefix)."""
    main = max(encoder_convs, key=lambda n: len(encoder_convs[n]))
    if len(encoder_convs[main]) != _TAP_CONVS[-1] + 1:
        raise WeightsError("no nested model holds all 13 VGG16 convolutions")
    return main


def _encoder_plan(sub: Graph, name: str) -> tuple[list[str], list[int]]:
    """A nested encoder model's convolutions in order and, per output index, its tap level.

    The authors' file has five such models (input to block5_conv3, to block4_conv3, ...) that
    share VGG16's layers; a single model with five outputs is read the same way.
    """
    ancestry = ancestors(sub)
    convs = [n for n, lay in sub.layers.items() if lay.class_name == "Conv2D"]
    convs.sort(key=lambda n: len(ancestry[n]))
    widths = [w for w in VGG16_LAYOUT if isinstance(w, int)]
    found = [sub.layers[n].config.get("filters") for n in convs]
    if not found or found != widths[: len(found)]:
        raise WeightsError(f"nested model {name!r} is not VGG16's encoder: conv widths {found}")
    for n in convs:
        cfg = sub.layers[n].config
        if pair(cfg.get("kernel_size")) != (3, 3) or cfg.get("activation") != "relu":
            raise WeightsError(f"encoder convolution {n!r} is not a 3x3 ReLU convolution")
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
        pools = sum(sub.layers[a].class_name == "MaxPooling2D" for a in ancestry[ref.layer])
        if pools != _TAP_CONVS.index(index):
            raise WeightsError(f"{name!r} has max-pools in unexpected places")
        levels.append(_TAP_CONVS.index(index))
    return convs, levels


# ----------------------------------------------------------------------------- stages


def _stage_inputs(graph: Graph, features: _Features) -> list[_StageInput]:
    """The five stage concatenations, coarsest first: they fuse both dates' features."""
    by_level: dict[int, _StageInput] = {}
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
        if level in by_level:
            raise WeightsError(f"two decoder stages fuse encoder level {level}")
        by_level[level] = (lay, tuple(sources))
    if sorted(by_level) != list(range(5)):
        raise WeightsError(
            f"expected 5 decoder stages, one per VGG16 tap; found levels {sorted(by_level)}"
        )
    order = [by_level[level] for level in range(4, -1, -1)]  # coarsest first
    for i, (lay, stage_sources) in enumerate(order):
        if ("up" in stage_sources) != (i > 0):
            raise WeightsError(f"decoder stage {i + 1} ({lay.name!r}) has the wrong inputs")
    return order


def _stage_members(
    graph: Graph, ancestry: Mapping[str, set[str]], stage_inputs: Sequence[_StageInput]
) -> list[list[str]]:
    """Each decoder layer belongs to the stage of its latest stage-concatenation ancestor."""
    concat_stage = {lay.name: i for i, (lay, _) in enumerate(stage_inputs)}
    members: list[list[str]] = [[] for _ in stage_inputs]
    for name, anc in ancestry.items():
        stages = [concat_stage[a] for a in anc if a in concat_stage]
        if name in concat_stage:
            continue
        if stages:
            members[max(stages)].append(name)
        elif graph.layers[name].class_name not in {*INPUT_CLASSES, *MODEL_CLASSES}:
            raise WeightsError(f"layer {name!r} sits between the inputs and the VGG16 encoder")
    return members


def _dropout_rate(graph: Graph, members: Sequence[Sequence[str]]) -> float | None:
    """The rate of the decoder's Dropout layers if they all share one, else None."""
    rates = {
        float(graph.layers[n].config.get("rate", 0.0))
        for group in members
        for n in group
        if graph.layers[n].class_name == "Dropout"
    }
    return rates.pop() if len(rates) == 1 else None


def _check_no_stray_weights(graph: Graph, used: set[str], plans: Sequence[StagePlan]) -> None:
    """Refuse layers with weights that no part of the plan (nor ``used``) accounts for."""
    used = set(used)
    for p in plans:
        used |= {*(p.attention or ()), p.spatial_conv, p.head}
        used |= {n for n in (p.norm, p.up) if n is not None}
        used |= {n for block in p.blocks for n in block}
    weighted = {"Conv2D", "Conv2DTranspose", "Dense", "PReLU", "BatchNormalization"}
    stray = [n for n, lay in graph.layers.items() if lay.class_name in weighted and n not in used]
    if stray:
        raise WeightsError(f"layers with weights that DSIFN does not have: {stray[:3]}")


# ----------------------------------------------------------------------------- one stage


def _stage_plan(
    graph: Graph,
    names: Sequence[str],
    concat_order: tuple[str, ...],
    output_of: Mapping[str, str],
    depth: Mapping[str, int],
    notes: list[str],
    index: int,
) -> StagePlan:
    """The roles of the layers ``names`` of decoder stage ``index`` (0: coarsest)."""
    where = f"decoder stage {index + 1}"
    by_class: dict[str, list[str]] = {}
    for n in sorted(names, key=lambda n: depth[n]):
        by_class.setdefault(graph.layers[n].class_name, []).append(n)
    attention = _channel_attention(graph, by_class.get("Dense", []), where)
    blocks, spatial, head = _stage_convs(graph, by_class.get("Conv2D", []), where)
    spatial_order = _spatial_order(graph, graph.layers[spatial], where, notes)
    norm = _attention_norm(graph, by_class.get("BatchNormalization", []), blocks, where)
    output = _side_output(graph, graph.layers[head], output_of, where)
    up = _upsampling(graph, by_class.get("Conv2DTranspose", []), where)
    return StagePlan(
        concat_order=concat_order,
        attention=attention,
        blocks=blocks,
        spatial_conv=spatial,
        spatial_order=spatial_order,
        norm=norm,
        head=head,
        output=output,
        up=up,
    )


def _channel_attention(graph: Graph, dense: Sequence[str], where: str) -> tuple[str, str] | None:
    """The two chained dense layers of the channel attention, or None if it has none."""
    if not dense:
        return None
    if len(dense) != 2:
        raise WeightsError(f"{where}: expected 2 dense layers (channel attention)")
    first, second = dense  # ordered by depth: the first feeds the second
    if not any(r.layer == first for r in graph.layers[second].inputs):
        raise WeightsError(f"{where}: the channel-attention dense layers are not chained")
    return first, second


def _stage_convs(
    graph: Graph, convs: Sequence[str], where: str
) -> tuple[list[tuple[str, str, str]], str, str]:
    """A stage's conv blocks (conv, PReLU, BatchNorm), spatial-attention conv and side head."""
    blocks, spatial, heads = [], [], []
    for n in convs:
        cfg = graph.layers[n].config
        kernel, filters = pair(cfg.get("kernel_size")), cfg.get("filters")
        if kernel == (3, 3):
            prelu = sole_consumer(graph, n, {"PReLU"})
            norm = prelu and sole_consumer(graph, prelu.name, {"BatchNormalization"})
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
    return blocks, spatial[0], heads[0]


def _spatial_order(graph: Graph, sa: Layer, where: str, notes: list[str]) -> tuple[str, str]:
    """What the spatial-attention conv's two input channels are: ("mean", "max") or reverse."""
    if sa.config.get("use_bias", True):
        raise WeightsError(f"{where}: the spatial-attention convolution has a bias")
    if activation_after(graph, sa)[0] != "sigmoid":
        raise WeightsError(f"{where}: the spatial-attention map is not a sigmoid")
    pooled = sa.nodes[0] if len(sa.nodes) == 1 else []
    pool_cat = graph.layers[pooled[0].layer] if len(pooled) == 1 else None
    kinds: list[str | None] = []
    if pool_cat is not None and pool_cat.class_name == "Concatenate":
        kinds = [pool_kind(graph.layers[r.layer]) for r in pool_cat.nodes[0]]
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
    return str(kinds[0]), str(kinds[1])


def _attention_norm(
    graph: Graph, norms: Sequence[str], blocks: Sequence[tuple[str, str, str]], where: str
) -> str | None:
    """The BatchNorm after the spatial attention (the one not in a conv block), if any."""
    for n in norms:
        # The "keras" variant is built with Keras's default epsilon; another would not fit.
        if abs(float(graph.layers[n].config.get("epsilon", 1e-3)) - 1e-3) > 1e-9:
            raise WeightsError(f"{where}: BatchNorm {n!r} has epsilon other than 1e-3")
    block_norms = {b[2] for b in blocks}
    after = [n for n in norms if n not in block_norms]
    if len(after) > 1:
        raise WeightsError(f"{where}: more than one BatchNorm after the spatial attention")
    return after[0] if after else None


def _side_output(graph: Graph, head: Layer, output_of: Mapping[str, str], where: str) -> str:
    """The name of the sigmoid model output that the 1x1 side head feeds."""
    act, last = activation_after(graph, head)
    if act != "sigmoid" or last.name not in output_of:
        raise WeightsError(f"{where}: side output {head.name!r} is not a sigmoid model output")
    return output_of[last.name]


def _upsampling(graph: Graph, ups: Sequence[str], where: str) -> str | None:
    """The 2x2 stride-2 transposed convolution that upsamples for the next stage, if any."""
    if len(ups) > 1:
        raise WeightsError(f"{where}: more than one transposed convolution")
    for n in ups:
        cfg = graph.layers[n].config
        if pair(cfg.get("kernel_size")) != (2, 2) or pair(cfg.get("strides")) != (2, 2):
            raise WeightsError(f"{where}: transposed convolution {n!r} is not 2x2 stride 2")
    return ups[0] if ups else None
