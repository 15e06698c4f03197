"""Checks of user-supplied options, shared by the whole package."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from dsifn.errors import ConfigError

T = TypeVar("T")


def check_choice(name: str, value: T, allowed: Iterable[T]) -> T:
    """Return ``value`` if it is one of ``allowed``, else raise a :class:`ConfigError`.

    Args:
        name: The option's name, as the user knows it.
        value: The value given.
        allowed: The valid values (a ``Literal``'s arguments, say).

    Returns:
        ``value`` unchanged.

    Raises:
        ConfigError: Naming the option, the value and the valid values.
    """
    choices = tuple(allowed)
    if value not in choices:
        valid = ", ".join(repr(c) for c in choices)
        raise ConfigError(f"{name} must be one of {valid}; got {value!r}")
    return value
