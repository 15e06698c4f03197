"""Imports of the packages that dsifn's extras add (onnx, onnxruntime, keras, ...).

An optional package is imported where it is used, so ``import dsifn`` works without it; when
it is absent the user needs to know which extra to install, in one line, not a
``ModuleNotFoundError`` from deep inside a function.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from dsifn.errors import ConfigError

__all__ = ["require"]


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional module, or say which extra provides it.

    Args:
        module: The module to import, e.g. ``"onnxruntime"``.
        extra: The dsifn extra that installs it, e.g. ``"onnx"``.
        what: What needs it, for the message, e.g. ``"ONNX export"``.

    Returns:
        The imported module.

    Raises:
        ConfigError: If the module (or one it needs) cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        missing = getattr(exc, "name", None) or module
        raise ConfigError(
            f"{what} needs the {extra} extra ({missing} is not installed): "
            f"pip install 'dsifn[{extra}]'"
        ) from exc
