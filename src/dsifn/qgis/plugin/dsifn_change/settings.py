"""The provider's one setting, the dsifn executable, in Processing's options."""

from __future__ import annotations

import os

from processing.core.ProcessingConfig import ProcessingConfig, Setting

from .command import is_path, read_recorded

EXECUTABLE = "DSIFN_EXECUTABLE"
"""The setting's key (stored as ``Processing/Configuration/DSIFN_EXECUTABLE``)."""


def recorded_executable() -> str | None:
    """The dsifn executable that installed the plugin (``installed.json``), if any."""
    return read_recorded(os.path.dirname(__file__))


def add_setting(group: str) -> None:
    """Show the setting under Settings > Options > Processing > Providers > ``group``."""
    recorded = recorded_executable()
    automatic = recorded if recorded else "dsifn on PATH"
    ProcessingConfig.addSetting(
        Setting(
            group,
            EXECUTABLE,
            "dsifn executable (empty: automatic)",
            "",
            valuetype=Setting.FILE,
            validator=_check,
            placeholder=f"automatic: {automatic}",
        )
    )
    ProcessingConfig.readSettings()


def remove_setting() -> None:
    """Take the setting away when the provider unloads."""
    if EXECUTABLE in ProcessingConfig.settings:
        ProcessingConfig.removeSetting(EXECUTABLE)


def executable_setting() -> str:
    """The setting's value ("" when automatic)."""
    value = ProcessingConfig.getSetting(EXECUTABLE)
    return str(value).strip() if value else ""


def _check(value: str) -> None:
    """Accept empty (automatic), a command name found on PATH at run time, or a file."""
    text = str(value or "").strip()
    if is_path(text) and not os.path.isfile(text):
        raise ValueError(f"dsifn executable {text} does not exist")
