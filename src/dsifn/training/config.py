"""Training configuration: one dataclass per concern, loaded from YAML with dotted overrides.

A training run is described by a :class:`TrainConfig` with the sections ``model`` (its ``name``
picks the network from :mod:`dsifn.models.registry`, DSIFN by default, and its other keys are
that network's configuration: :class:`~dsifn.models.DSIFNConfig` and so on), ``data``
(:class:`~dsifn.data.DataConfig`), ``loss``,
``optim``, ``schedule``, ``validation`` and ``run``. The defaults reproduce the recipe reported
for the paper (Zhang et al., ISPRS J. P&RS 166, 2020, as secondary sources report it):
Adam at 1e-4, learning rate x0.1 after 5 validations without F1 gain, early stop after 20,
512-pixel tiles, a frozen ImageNet VGG16 encoder, BCE + Dice on all five outputs with weight 1.

Configs are plain YAML mirroring the sections; the bundled ones (``default``, ``levir``,
``dsifn_cd``) live in ``dsifn/configs``. Command-line overrides are ``key=value`` with dotted
keys (``optim.lr=3e-4``, ``data.root=/x``); a key without a dot that names a field of exactly
one section is a shortcut (``epochs=2`` is ``schedule.epochs=2``). Values are parsed as YAML and
checked against the field types; ``model.*`` keys against the network ``model.name`` selects.
An override of ``model.name`` that changes the network starts its section from that network's
training defaults (:func:`model_recipe`), keeping ``in_channels`` and ``normalization``, which
describe the data rather than the network (:func:`switch_model`).
"""

from __future__ import annotations

import dataclasses
import os
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import yaml

from dsifn._config import Config, build, coerce, dataclass_in, field_types, plain, settle
from dsifn._validation import check_choice
from dsifn.data import DataConfig
from dsifn.devices import Precision
from dsifn.errors import ConfigError
from dsifn.io.atomic import atomic_path
from dsifn.models.dsifn import DSIFNConfig
from dsifn.models.registry import ModelConfig, model_config, model_entry

__all__ = [
    "BUNDLED_CONFIGS",
    "LossConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "ValidationConfig",
    "apply_overrides",
    "load_config",
    "loss_weights",
    "model_recipe",
    "parse_overrides",
    "switch_model",
]

Optimizer = Literal["adam", "adamw", "sgd"]
Scheduler = Literal["plateau", "cosine", "constant"]
TargetMode = Literal["downsample", "upsample"]

# Names accepted by `load_config` / `dsifn train --config` for the YAML files shipped with dsifn.
BUNDLED_CONFIGS = ("default", "levir", "dsifn_cd")
# What a model section keeps when model.name changes: what describes the data, not the network.
SHARED_MODEL_FIELDS = ("in_channels", "normalization")
T = TypeVar("T", bound="TrainConfig")


@dataclass(frozen=True)
class LossConfig(Config):
    """Deep-supervision loss: BCE + soft Dice on each of the five side outputs (paper).

    A network with fewer outputs takes the first weights, finest first: the baselines, whose one
    output is at stride 1, train with BCE + Dice on it, weighted by ``weights[0]``
    (:func:`loss_weights`).
    """

    weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)  # per DSIFN output, finest first
    bce_weight: float = 1.0  # factor of the binary cross-entropy term
    dice_weight: float = 1.0  # factor of the soft Dice term
    target_mode: TargetMode = "downsample"  # reference brought to each output's size (paper)
    pos_weight: float | None = None  # BCE weight of changed pixels; None = 1

    section: ClassVar[str] = "loss"

    def __post_init__(self) -> None:
        """Check values."""
        settle(self)
        check_choice("loss.target_mode", self.target_mode, get_args(TargetMode))
        if len(self.weights) != 5 or any(w < 0 for w in self.weights):
            raise ConfigError(f"loss.weights needs 5 non-negative numbers; got {self.weights}")
        if self.bce_weight < 0 or self.dice_weight < 0:
            raise ConfigError("loss.bce_weight and loss.dice_weight must be at least 0")
        if self.pos_weight is not None and self.pos_weight <= 0:
            raise ConfigError(f"loss.pos_weight must be positive; got {self.pos_weight}")


@dataclass(frozen=True)
class OptimConfig(Config):
    """Optimiser and gradient handling."""

    optimizer: Optimizer = "adam"  # the paper's Adam
    lr: float = 1e-4  # initial learning rate (paper)
    weight_decay: float = 0.0  # L2 (adam, sgd) or decoupled (adamw) weight decay
    betas: tuple[float, float] = (0.9, 0.999)  # Adam / AdamW moment decay rates
    momentum: float = 0.9  # SGD momentum
    grad_clip: float | None = None  # clip the global gradient norm to this; None = no clipping
    accumulate: int = 1  # micro-batches summed into one optimiser step

    section: ClassVar[str] = "optim"

    def __post_init__(self) -> None:
        """Check values."""
        settle(self)
        check_choice("optim.optimizer", self.optimizer, get_args(Optimizer))
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive; got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be at least 0; got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1); got {self.betas}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"optim.grad_clip must be positive; got {self.grad_clip}")
        if self.accumulate < 1:
            raise ConfigError(f"optim.accumulate must be at least 1; got {self.accumulate}")


@dataclass(frozen=True)
class ScheduleConfig(Config):
    """How long to train and how the learning rate moves.

    Patience counts validation rounds (epochs unless ``validation.every_steps`` is set), with
    Keras's meaning: ``plateau_patience: 5`` lowers the rate at the 5th round in a row without a
    validation-F1 gain.
    """

    epochs: int = 200  # upper bound on epochs; early stopping usually ends the run first
    max_steps: int | None = None  # stop after this many optimiser steps; None = no limit
    max_minutes: float | None = None  # wall-clock budget; training stops when it is spent
    scheduler: Scheduler = "plateau"  # plateau (paper), cosine (over all epochs) or constant
    plateau_patience: int = 5  # rounds without F1 gain before lowering the rate (paper)
    plateau_factor: float = 0.1  # rate multiplier on a plateau (paper)
    min_lr: float = 0.0  # the plateau and cosine schedules never go below this
    early_stop_patience: int | None = 20  # rounds without F1 gain before stopping; None = never

    section: ClassVar[str] = "schedule"

    def __post_init__(self) -> None:
        """Check values."""
        check_choice("schedule.scheduler", self.scheduler, get_args(Scheduler))
        if self.epochs < 1:
            raise ConfigError(f"schedule.epochs must be at least 1; got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"schedule.max_steps must be at least 1; got {self.max_steps}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"schedule.max_minutes must be positive; got {self.max_minutes}")
        if self.plateau_patience < 1:
            raise ConfigError("schedule.plateau_patience must be at least 1")
        if not 0 < self.plateau_factor < 1:
            raise ConfigError(
                f"schedule.plateau_factor must be in (0, 1); got {self.plateau_factor}"
            )
        if self.min_lr < 0:
            raise ConfigError(f"schedule.min_lr must be at least 0; got {self.min_lr}")
        if self.early_stop_patience is not None and self.early_stop_patience < 1:
            raise ConfigError("schedule.early_stop_patience must be at least 1 (or null)")


@dataclass(frozen=True)
class ValidationConfig(Config):
    """Validation during training; its F1 picks ``best.pt`` and drives the schedule."""

    split: str = "val"  # split of the dataset used for validation
    threshold: float = 0.5  # probability above which a pixel counts as changed
    every_steps: int | None = None  # validate every N optimiser steps; None = after each epoch
    batch_size: int = 1  # pairs per validation batch (full images, so often 1)

    section: ClassVar[str] = "validation"

    def __post_init__(self) -> None:
        """Check values."""
        if not 0 < self.threshold < 1:
            raise ConfigError(f"validation.threshold must be in (0, 1); got {self.threshold}")
        if self.every_steps is not None and self.every_steps < 1:
            raise ConfigError("validation.every_steps must be at least 1 (or null)")
        if self.batch_size < 1:
            raise ConfigError(f"validation.batch_size must be at least 1; got {self.batch_size}")


@dataclass(frozen=True)
class RunConfig(Config):
    """Where and how the run executes: batches, workers, device, precision, seeds.

    ``compile`` is opt-in: :mod:`dsifn.training.step` says why.
    """

    seed: int = 0  # seeds weights, data order, augmentation and dropout
    batch_size: int = 8  # training pairs per batch and per process (not given by the paper)
    # DataLoader worker processes per training process; None: min(4, CPU cores this process
    # may use / processes on this machine), at least 0, resolved when the run starts
    num_workers: int | None = None
    device: str = "auto"  # auto, cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK)
    precision: Precision = "auto"  # auto (bf16 where native, else fp32), fp32, bf16 or fp16 (CUDA)
    channels_last: bool | None = None  # NHWC layout; None: on for CUDA and CPUs (measured)
    compile: bool = False  # torch.compile the model; opt-in (see dsifn.training.step)
    deterministic: bool = False  # deterministic kernels (slower); needed for bitwise resume
    tensorboard: bool = True  # write TensorBoard events when tensorboard is installed

    section: ClassVar[str] = "run"

    def __post_init__(self) -> None:
        """Check values."""
        check_choice("run.precision", self.precision, get_args(Precision))
        if self.batch_size < 1:
            raise ConfigError(f"run.batch_size must be at least 1; got {self.batch_size}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"run.num_workers must be at least 0; got {self.num_workers}")

    def resolved_workers(self) -> int:
        """``num_workers``, or for None as many as the cores allow, four at most.

        More workers than cores only compete with the training process (and the DataLoader
        warns); under ``torchrun`` the cores are shared by ``LOCAL_WORLD_SIZE`` processes.
        """
        if self.num_workers is not None:
            return self.num_workers
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        from dsifn.distributed import this_process

        return min(4, cores // this_process().local_world_size)


def loss_weights(loss: LossConfig, outputs: int, name: str = "the model") -> tuple[float, ...]:
    """The weights of a network's outputs: the first ``outputs`` of ``loss.weights``.

    Args:
        loss: The ``loss`` section.
        outputs: How many maps the network returns (5 for DSIFN, 1 for the baselines).
        name: The network, for the message.

    Raises:
        ConfigError: If every weight the network uses is 0 (it would learn nothing).
    """
    weights = loss.weights[:outputs]
    if not any(weights):
        raise ConfigError(
            f"{name} trains on its first {outputs} output(s) with loss.weights "
            f"{list(weights)}: all zero, it would learn nothing"
        )
    return weights


def model_recipe(name: str, **shared: Any) -> ModelConfig:
    """A network's configuration as training starts from it: its defaults, the paper's encoder.

    DSIFN starts from ImageNet VGG16 weights (downloaded once; the paper's frozen encoder);
    the baselines train from scratch with their published defaults.

    Args:
        name: A ``model.name``.
        **shared: Fields to set (those of :data:`SHARED_MODEL_FIELDS`, say).
    """
    options: dict[str, Any] = {"encoder_weights": "imagenet"} if name == "dsifn" else {}
    config: ModelConfig = model_entry(name).config(**options, **shared)
    return config


def _paper_model() -> ModelConfig:
    return model_recipe("dsifn")


@dataclass(frozen=True)
class TrainConfig(Config):
    """Everything a training run needs, one section per concern."""

    model: ModelConfig = field(default_factory=_paper_model)  # network (DSIFN: frozen VGG16)
    data: DataConfig = field(default_factory=lambda: DataConfig(crop_size=512))  # dataset
    loss: LossConfig = field(default_factory=LossConfig)  # deep-supervision loss
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimiser
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # length and lr schedule
    validation: ValidationConfig = field(default_factory=ValidationConfig)  # validation rounds
    run: RunConfig = field(default_factory=RunConfig)  # execution

    @classmethod
    def from_dict(cls: type[T], values: Mapping[str, Any]) -> T:
        """Build from a plain (nested) mapping; the model section's ``name`` picks the network.

        Raises:
            ConfigError: On an unknown key (listing the valid ones) or a value of the wrong type.
        """
        if isinstance(values, Mapping) and "model" in values:
            values = {**values, "model": model_config(values["model"])}
        return build(cls, values, cls.section)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dictionary; the model section's ``name`` comes first."""
        out: dict[str, Any] = plain(self)
        out["model"] = {"name": type(self.model).name, **out["model"]}
        return out

    def to_yaml(self) -> str:
        """The configuration as YAML text."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the configuration as YAML, atomically."""
        with atomic_path(path, overwrite=overwrite) as tmp:
            tmp.write_text(self.to_yaml())
        return Path(path)


def load_config(
    source: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """Load a training configuration and apply ``key=value`` overrides.

    Args:
        source: A YAML file, the name of a bundled config (``default``, ``levir``,
            ``dsifn_cd``), or None for the built-in defaults.
        overrides: Strings ``key=value`` with dotted keys (``optim.lr=3e-4``).

    Returns:
        The resolved configuration.

    Raises:
        ConfigError: If the file is not valid YAML, or a key or value is wrong.
        FileNotFoundError: If ``source`` is neither a file nor a bundled config name.
    """
    values: dict[str, Any] = {}
    if source is not None:
        values = _read_yaml(source)
    base = TrainConfig.from_dict(values)
    return apply_overrides(base, parse_overrides(overrides))


def _read_yaml(source: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(source)
    # A file of that name wins; a folder of that name (a dataset called "levir", say) does not.
    if str(source) in BUNDLED_CONFIGS and not path.is_file():
        text = (resources.files("dsifn") / "configs" / f"{source}.yaml").read_text()
        name = f"bundled config {source!r}"
    elif path.is_file():
        text = path.read_text()
        name = str(path)
    else:
        raise FileNotFoundError(
            f"config {str(source)!r} is neither a file nor a bundled config "
            f"({', '.join(BUNDLED_CONFIGS)})"
        )
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{name} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"{name} must hold a mapping of sections; got {type(loaded).__name__}")
    return loaded


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """Split ``key=value`` strings; the values stay raw text until they are type-checked.

    Raises:
        ConfigError: If an item has no ``=`` or an empty key.
    """
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not key=value (e.g. optim.lr=3e-4)")
        parsed[key.strip()] = value
    return parsed


def apply_overrides(config: TrainConfig, overrides: Mapping[str, str]) -> TrainConfig:
    """Return ``config`` with dotted-key overrides applied and checked.

    Args:
        config: The configuration to start from.
        overrides: Dotted key to raw value text; the text is parsed as YAML (``3e-4``,
            ``true``, ``null``, ``[1, 2]``), except for text fields where it is kept as is.

    Returns:
        A new configuration.

    Raises:
        ConfigError: On an unknown key (listing the valid keys) or a value of the wrong type.
    """
    rest = dict(overrides)
    for key in ("model.name", "name"):  # the network first: it decides the valid model.* keys
        if key in rest:
            config = switch_model(config, _parse_value(rest.pop(key), str))
    tree = config.to_dict()
    for raw_key, text in rest.items():
        path, hint = _resolve_key(raw_key, type(config.model))
        node = tree
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[path[-1]] = _parse_value(text, hint)
    return TrainConfig.from_dict(tree)


def _parse_value(text: str, hint: Any) -> Any:
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    if not isinstance(value, str) and _accepts_str(hint) and not _accepts(hint, value):
        return text  # `data.root=2024` means the folder "2024", not the number
    return value


def _accepts_str(hint: Any) -> bool:
    if hint is str:
        return True
    if get_origin(hint) in (Union, types.UnionType):
        return any(_accepts_str(arm) for arm in get_args(hint))
    return False


def _accepts(hint: Any, value: Any) -> bool:
    try:
        coerce(value, hint, "")
    except ConfigError:
        return False
    return True


def switch_model(config: TrainConfig, name: str) -> TrainConfig:
    """``config`` training network ``name``: the same run, another ``model`` section.

    The section starts from :func:`model_recipe`, keeping :data:`SHARED_MODEL_FIELDS` (the
    band count and normalisation describe the data); ``config`` itself when it already trains
    ``name``.

    Raises:
        ConfigError: If ``name`` is no network's.
    """
    if not isinstance(name, str) or type(config.model).name == name:
        model_entry(str(name))  # refuses a name that is not one
        return config
    shared = {f: getattr(config.model, f) for f in SHARED_MODEL_FIELDS}
    return dataclasses.replace(config, model=model_recipe(name, **shared))


def _section_fields(section: str, hint: Any, model: type[Any]) -> dict[str, Any]:
    """The keys of a section and their types; the model section's are its network's."""
    if section == "model":
        return {"name": str, **field_types(model)}
    return field_types(dataclass_in(hint))


def _resolve_key(key: str, model: type[Any] = DSIFNConfig) -> tuple[list[str], Any]:
    """Check a dotted key against the dataclass tree; return its path and field type.

    ``model`` is the configuration class of the network the run trains.
    """
    parts = key.split(".")
    sections = field_types(TrainConfig)
    if len(parts) == 1 and parts[0] not in sections:
        owners = [n for n, hint in sections.items() if parts[0] in _section_fields(n, hint, model)]
        if len(owners) == 1:
            parts = [owners[0], parts[0]]
        elif len(owners) > 1:
            choices = ", ".join(f"{o}.{parts[0]}" for o in owners)
            raise ConfigError(f"override key {key!r} is ambiguous: use one of {choices}")
    hint: Any = TrainConfig
    for i, part in enumerate(parts):
        if dataclass_in(hint) is None:
            where = ".".join(parts[:i])
            raise ConfigError(f"override key {key!r}: {where} has no sub-keys")
        if i == 1:
            fields = _section_fields(parts[0], hint, model)
        else:
            fields = field_types(dataclass_in(hint))
        if part not in fields:
            prefix = ".".join(parts[:i])
            valid = ", ".join(f"{prefix}.{f}" if prefix else f for f in fields)
            network = f" for model.name={model.name}" if parts[0] == "model" else ""
            raise ConfigError(f"unknown config key {key!r}{network}; valid keys here: {valid}")
        hint = fields[part]
    return parts, hint
