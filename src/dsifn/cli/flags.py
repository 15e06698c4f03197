"""Library messages in the command line's words: a quoted `parameter=value` becomes its flag.

Library code names Python parameters in its messages, quoted in backticks: ``pass
`overwrite=True` to replace it`` or ``choose `bands="4,3,2"```. The command line rewrites each
quoted parameter that one of the command's options sets into that option (``--overwrite``,
``--bands 4,3,2``). An option sets the parameter of its ``dest``, or of ``param`` where the
command names one (``--data`` sets ``data.root``). A quoted name no option sets loses its
quotes only (``data.root=PATH`` is also how ``dsifn train`` overrides a setting).
"""

from __future__ import annotations

import argparse
import re

__all__ = ["in_flags", "set_param"]

_QUOTED = re.compile(r"`([A-Za-z_][\w.]*)(?:=([^`]*))?`")


def set_param(action: argparse.Action, param: str) -> argparse.Action:
    """Record that ``action`` sets library parameter ``param`` (when it is not its ``dest``)."""
    action.param = param  # type: ignore[attr-defined]
    return action


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    found: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if action.option_strings:
            found.setdefault(getattr(action, "param", action.dest), action)
    return found


def _as_flag(action: argparse.Action, value: str | None) -> str:
    flag = max(action.option_strings, key=len)
    if value is None or action.nargs == 0:  # a switch: --overwrite, not --overwrite True
        return flag
    return f"{flag} {value.strip().strip(chr(34) + chr(39))}"


def in_flags(message: str, parser: argparse.ArgumentParser | None) -> str:
    """``message`` with every quoted parameter an option of ``parser`` sets written as it."""
    options = _options(parser) if parser is not None else {}

    def rewrite(found: re.Match[str]) -> str:
        name, value = found[1], found[2]
        action = options.get(name)
        if action is not None:
            return _as_flag(action, value)
        return name if value is None else f"{name}={value}"

    return _QUOTED.sub(rewrite, message)
