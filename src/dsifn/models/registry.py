"""The networks ``model.name`` selects: one table of name, network class and configuration class.

Every place that builds a network from a name or a recorded configuration reads :data:`MODELS`:
the checkpoint loader, ``dsifn train`` (the ``model`` section's ``name``), ``dsifn info
--model`` and ``dsifn compare``. A configuration records no name of its own beyond its class's
``name``; written out (a checkpoint's ``model_config``, a training YAML's ``model`` section)
it carries ``name`` as its first key, and a record without one is DSIFN's, as every record
written before the baselines existed is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeGuard, cast

from dsifn._config import build, field_types
from dsifn._validation import check_choice
from dsifn.errors import ConfigError
from dsifn.models.baseline import BaselineConfig, BaselineNetwork
from dsifn.models.cdnet import CDNet, CDNetConfig
from dsifn.models.dsifn import DSIFN, DSIFNConfig
from dsifn.models.fc_ef import FCEF, FCEFConfig
from dsifn.models.fc_siam_conc import FCSiamConc, FCSiamConcConfig
from dsifn.models.fc_siam_diff import FCSiamDiff, FCSiamDiffConfig

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "MODEL_NAMES",
    "ChangeNetwork",
    "ModelConfig",
    "ModelEntry",
    "build_network",
    "config_dict",
    "entry_of",
    "is_network",
    "model_config",
    "model_entry",
]

# Any network of the package, and its configuration: both take (t1, t2) and return logits.
ChangeNetwork: TypeAlias = DSIFN | BaselineNetwork
ModelConfig: TypeAlias = DSIFNConfig | BaselineConfig

# The name a configuration record without one has: everything written before the baselines.
DEFAULT_MODEL = "dsifn"


@dataclass(frozen=True)
class ModelEntry:
    """One network of the table."""

    title: str  # as the literature writes it: "FC-Siam-diff"
    network: type[ChangeNetwork]  # built as network(config)
    config: type[ModelConfig]  # its configuration; its ``name`` is the entry's
    reference: str  # where it was published

    @property
    def name(self) -> str:
        """The ``model.name`` that selects it (its configuration class's ``name``)."""
        return self.config.name


MODELS: dict[str, ModelEntry] = {
    entry.name: entry
    for entry in (
        ModelEntry("DSIFN", DSIFN, DSIFNConfig, "Zhang et al., ISPRS J. P&RS 166, 2020"),
        ModelEntry("FC-EF", FCEF, FCEFConfig, "Daudt, Le Saux & Boulch, ICIP 2018"),
        ModelEntry(
            "FC-Siam-conc", FCSiamConc, FCSiamConcConfig, "Daudt, Le Saux & Boulch, ICIP 2018"
        ),
        ModelEntry(
            "FC-Siam-diff", FCSiamDiff, FCSiamDiffConfig, "Daudt, Le Saux & Boulch, ICIP 2018"
        ),
        ModelEntry("CDNet", CDNet, CDNetConfig, "Alcantarilla et al., Auton. Robots 42, 2018"),
    )
}
MODEL_NAMES = tuple(MODELS)


def model_entry(name: str) -> ModelEntry:
    """The entry of ``name``.

    Raises:
        ConfigError: If no network has that name (the message lists the names).
    """
    return MODELS[check_choice("model.name", name, MODEL_NAMES)]


def entry_of(thing: ModelConfig | ChangeNetwork) -> ModelEntry:
    """The entry of a configuration, or of a network (by its configuration)."""
    config = thing.config if is_network(thing) else cast(ModelConfig, thing)
    return MODELS[type(config).name]


def is_network(thing: object) -> TypeGuard[ChangeNetwork]:
    """Whether ``thing`` is one of the package's networks (not wrapped)."""
    return isinstance(thing, (DSIFN, BaselineNetwork))


def model_config(values: Any, where: str = "model") -> ModelConfig:
    """Build the configuration a record describes; its ``name`` picks the class (default DSIFN).

    Args:
        values: ``{"name": ..., <fields of that network's configuration>}``; fields not given
            keep their defaults.
        where: Dotted key of ``values`` in error messages.

    Raises:
        ConfigError: One line on an unknown name, an unknown key (listing the valid keys of
            the network named) or a value of the wrong type.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys; got {type(values).__name__}")
    fields = dict(values)
    name = fields.pop("name", DEFAULT_MODEL)
    entry = model_entry(name) if isinstance(name, str) else model_entry(repr(name))
    known = field_types(entry.config)
    unknown = sorted(str(k) for k in fields if k not in known)
    if unknown:
        keys = ", ".join(f"{where}.{k}" for k in ("name", *known))
        raise ConfigError(
            f"unknown config key(s) {', '.join(f'{where}.{k}' for k in unknown)} for "
            f"{where}.name={entry.name}; valid keys: {keys}"
        )
    config: ModelConfig = build(entry.config, fields, where)
    return config


def config_dict(config: ModelConfig) -> dict[str, Any]:
    """The record of a configuration: ``name`` first, then its fields (plain types)."""
    return {"name": type(config).name, **config.to_dict()}


def build_network(config: ModelConfig, *, pretrained: bool = True) -> ChangeNetwork:
    """The network ``config`` describes, with fresh weights.

    Args:
        config: Any network's configuration.
        pretrained: Load the pretrained encoder file a DSIFN configuration names. Off where the
            weights come from elsewhere (a checkpoint); the configuration still records it.

    Returns:
        The network, in training mode, on the CPU.
    """
    if isinstance(config, DSIFNConfig):
        if pretrained:
            return DSIFN(config)
        model = DSIFN(config, encoder_weights=None)
        model.config = config  # keep the recorded source of the encoder weights
        return model
    network = cast("type[BaselineNetwork]", entry_of(config).network)
    return network(config)
