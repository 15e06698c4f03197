"""Config dataclasses to and from plain data: the one typed builder behind every dsifn config.

Every configuration in dsifn (the training sections, :class:`~dsifn.data.DataConfig`,
:class:`~dsifn.models.DSIFNConfig`, :class:`~dsifn.models.Normalization`, the synthetic
dataset's) is a frozen dataclass deriving from :class:`Config`. ``from_dict`` checks a plain
mapping (YAML, JSON, a checkpoint's record) against the field types and builds the dataclass;
``to_dict`` gives it back as plain types. What is converted follows the field types, here and
nowhere else: lists become tuples, mappings become nested configs, integers become floats. A
wrong value is one line of :class:`~dsifn.errors.ConfigError` naming its dotted key
(``data.bands must be a list; got 3``); each config's ``__post_init__`` checks the rest.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

from dsifn._validation import check_choice
from dsifn.errors import ConfigError

__all__ = ["Config", "build", "coerce", "dataclass_in", "field_types", "plain", "settle"]

T = TypeVar("T")
C = TypeVar("C", bound="Config")

_UNIONS = (Union, types.UnionType)


class Config:
    """Base of dsifn's config dataclasses: a checked round trip through plain dictionaries.

    A config with tuple or nested-config fields calls :func:`settle` first in its
    ``__post_init__``, so that it takes lists and dicts from Python callers too.

    Attributes:
        section: The config's key in error messages (``data`` for ``data.bands``).
    """

    section: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dictionary (lists for tuples): YAML-, JSON- and ``weights_only``-safe."""
        out: dict[str, Any] = plain(self)
        return out

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build from a plain (nested) mapping; missing keys keep their defaults.

        Raises:
            ConfigError: On an unknown key (listing the valid ones) or a value of the wrong type.
        """
        return build(cls, values, cls.section)


def field_types(cls: Any) -> dict[str, Any]:
    """The resolved type of each field of dataclass ``cls``, in field order; {} for others."""
    return _field_types(cls)


@functools.cache
def _field_types(cls: Any) -> dict[str, Any]:
    if not (dataclasses.is_dataclass(cls) and isinstance(cls, type)):
        return {}
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def dataclass_in(hint: Any) -> type[Any] | None:
    """The dataclass a field type holds (``X`` or ``X | None``), else None."""
    arms = get_args(hint) if get_origin(hint) in _UNIONS else (hint,)
    for arm in arms:
        if dataclasses.is_dataclass(arm) and isinstance(arm, type):
            return arm
    return None


def build(cls: type[T], values: Any, where: str = "") -> T:
    """Instantiate dataclass ``cls`` from a mapping, type-checking every field.

    Args:
        cls: The dataclass.
        values: Field name to plain value; fields not given keep their defaults.
        where: Dotted key of ``values`` in error messages ("" for the top level).

    Raises:
        ConfigError: One line naming the key that is unknown or wrong.
    """
    label = where or "config"
    if not isinstance(values, Mapping):
        raise ConfigError(f"{label} must be a mapping of keys; got {type(values).__name__}")
    fields = field_types(cls)
    prefix = f"{where}." if where else ""
    unknown = sorted(str(k) for k in values if k not in fields)
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; valid keys: "
            f"{', '.join(prefix + k for k in fields)}"
        )
    kwargs = {name: coerce(value, fields[name], prefix + name) for name, value in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if not where or str(exc).startswith(where):
            raise
        raise ConfigError(f"{where}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{label}: {exc}") from exc


def settle(config: Any) -> None:
    """Give a config's container fields their declared types, in its ``__post_init__``.

    Python callers may pass lists and dicts as YAML does: a list or tuple that fits the field
    type becomes that tuple (floats where the type says so), a mapping becomes the nested
    config. A container that does not fit is left for the config's own checks to explain.
    """
    for name, hint in field_types(type(config)).items():
        value = getattr(config, name)
        nested = dataclass_in(hint)
        if isinstance(value, Mapping) and nested is not None:
            value = build(nested, value, name)
        elif isinstance(value, (list, tuple)):
            try:
                value = coerce(value, hint, name)
            except ConfigError:
                continue
        else:
            continue
        object.__setattr__(config, name, value)


def plain(value: Any, *, keep_tuples: bool = False) -> Any:
    """Dataclasses to dicts and (unless ``keep_tuples``) tuples to lists, recursively."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name), keep_tuples=keep_tuples)
            for f in dataclasses.fields(value)
        }
    if isinstance(value, Mapping):
        return {str(k): plain(v, keep_tuples=keep_tuples) for k, v in value.items()}
    if isinstance(value, tuple) and keep_tuples:
        return tuple(plain(v, keep_tuples=True) for v in value)
    if isinstance(value, (list, tuple)):
        return [plain(v, keep_tuples=keep_tuples) for v in value]
    return value


def coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against type ``hint``; convert lists to tuples and ints to floats.

    Raises:
        ConfigError: Naming ``key``, what it takes and what it got.
    """
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin in _UNIONS:
        return _union(value, get_args(hint), key)
    if origin is Literal:
        return check_choice(key, value, get_args(hint))
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return value if isinstance(value, hint) else build(hint, value, key)
    if origin is tuple:
        return _tuple(value, get_args(hint), key)
    if origin in (list, Sequence):
        (arg,) = get_args(hint) or (Any,)
        return [coerce(v, arg, key) for v in _items(value, key)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key} must be a mapping; got {value!r}")
        return dict(value)
    scalar = _SCALARS.get(hint)
    if scalar is not None:
        return scalar(value, key)
    if value is None:
        raise ConfigError(f"{key} may not be null")
    return value


def _union(value: Any, arms: tuple[Any, ...], key: str) -> Any:
    if value is None:
        if type(None) in arms:
            return None
        raise ConfigError(f"{key} may not be null")
    errors: dict[str, None] = {}  # each reason once, in the order of the arms
    for arm in arms:
        if arm is type(None):
            continue
        try:
            return coerce(value, arm, key)
        except ConfigError as exc:
            errors[str(exc)] = None
    reasons = list(errors)
    raise ConfigError(reasons[0] if len(reasons) == 1 else f"{key}: {'; '.join(reasons)}")


def _items(value: Any, key: str) -> list[Any] | tuple[Any, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key} must be a list; got {value!r}")
    return value


def _tuple(value: Any, args: tuple[Any, ...], key: str) -> tuple[Any, ...]:
    items = _items(value, key)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce(v, args[0], key) for v in items)
    if len(args) != len(items):
        raise ConfigError(f"{key} must be a list of {len(args)} values; got {value!r}")
    return tuple(coerce(v, a, key) for v, a in zip(items, args, strict=True))


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false; got {value!r}")
    return value


def _int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{key} must be an integer; got {value!r}")
    return int(value)


def _float(value: Any, key: str) -> float:
    number: float | None = None
    if isinstance(value, str):
        try:  # YAML 1.1 reads `3e-4` (no dot) as text.
            number = float(value)
        except ValueError:
            pass
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        number = float(value)  # NumPy's numbers too: a config holds plain Python values
    if number is None:
        raise ConfigError(f"{key} must be a number; got {value!r}")
    if not math.isfinite(number):
        # No setting takes NaN or infinity: a NaN rate or weight would train to NaN.
        raise ConfigError(f"{key} must be a finite number; got {value!r}")
    return number


def _str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key} must be text; got {value!r}")
    return value


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    bool: _bool,
    int: _int,
    float: _float,
    str: _str,
}
