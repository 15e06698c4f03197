"""Installing the QGIS plugin: into a QGIS profile's plugin folder, or as a zip for QGIS.

The plugin (``plugin/dsifn_change``) ships inside the package. Installing copies it, with the
version of dsifn and the path of the ``dsifn`` executable that installs it (``installed.json``:
the plugin's default way to find the user's environment when QGIS's PATH lacks it), into
``<profiles>/<profile>/python/plugins/dsifn_change``, found as QGIS finds it, and enables it in
the profile's settings. The folder is built beside its final place and renamed into it, so a
failed install leaves the plugin as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from dsifn._version import __version__
from dsifn.errors import ConfigError, OutputExistsError
from dsifn.io.atomic import atomic_path, check_output_folder, move_into_place, work_folder

__all__ = [
    "PLUGIN_NAME",
    "InstalledPlugin",
    "default_profile",
    "dsifn_executable",
    "enable_in_settings",
    "enable_line",
    "install_plugin",
    "plugin_files",
    "plugins_folder",
    "profiles_folder",
    "write_plugin_zip",
]

PLUGIN_NAME = "dsifn_change"
"""The plugin's folder name, which is also its name in QGIS's settings."""
PLUGIN_SOURCE = Path(__file__).parent / "plugin" / PLUGIN_NAME
RECORD = "installed.json"
"""Written into the installed plugin: dsifn's version and executable."""
_SKIPPED = ("__pycache__", ".pyc", RECORD)


@dataclass(frozen=True)
class InstalledPlugin:
    """Where the plugin went and what it will run."""

    folder: Path  # the plugin's folder in the profile
    executable: str | None  # the dsifn executable recorded, None if none was found
    enabled: Path  # the settings file it was enabled in


def profiles_folder(
    env: Mapping[str, str] | None = None, platform: str = sys.platform, home: Path | None = None
) -> Path:
    """QGIS's folder of user profiles, found as QGIS finds it.

    ``QGIS_CUSTOM_CONFIG_PATH`` wins; else the application-data folder of the platform:
    ``~/.local/share`` (``$XDG_DATA_HOME``) on Linux, ``~/Library/Application Support`` on
    macOS, ``%APPDATA%`` on Windows, with ``QGIS/QGIS3`` under it; profiles are in its
    ``profiles`` folder.
    """
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    custom = env.get("QGIS_CUSTOM_CONFIG_PATH")
    if custom:
        return Path(custom) / "profiles"
    if platform.startswith("win"):
        appdata = Path(env.get("APPDATA") or home / "AppData" / "Roaming")
        return appdata / "QGIS" / "QGIS3" / "profiles"
    if platform == "darwin":
        return home / "Library" / "Application Support" / "QGIS" / "QGIS3" / "profiles"
    data = Path(env.get("XDG_DATA_HOME") or home / ".local" / "share")
    return data / "QGIS" / "QGIS3" / "profiles"


def default_profile(profiles: Path) -> str:
    """The profile QGIS opens: ``defaultProfile`` of ``profiles.ini``, else ``default``."""
    try:
        text = (profiles / "profiles.ini").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "default"
    found = re.search(r"^\s*defaultProfile\s*=\s*(.+?)\s*$", text, flags=re.MULTILINE)
    return found[1] if found else "default"


def plugins_folder(profile: str | None = None, profiles: Path | None = None) -> Path:
    """The plugin folder of a profile (the default profile when None).

    Raises:
        ConfigError: If ``profile`` is named but does not exist (the default profile may not
            exist yet: QGIS makes it at its first start, and so does the install).
    """
    profiles = profiles_folder() if profiles is None else profiles
    name = default_profile(profiles) if profile is None else profile
    if not name or any(part in name for part in ("/", "\\")) or name in (".", ".."):
        raise ConfigError(f"a QGIS profile is a name, not {name!r}")
    if profile is not None and not (profiles / name).is_dir():
        known = ", ".join(_profile_names(profiles)) or "none"
        raise ConfigError(f"QGIS profile {name!r} does not exist in {profiles} (profiles: {known})")
    return profiles / name / "python" / "plugins"


def _profile_names(profiles: Path) -> list[str]:
    return sorted(p.name for p in profiles.iterdir() if p.is_dir()) if profiles.is_dir() else []


def dsifn_executable() -> str | None:
    """The ``dsifn`` executable of this environment, as an absolute path; None if not found.

    The command that runs now, when it is the ``dsifn`` script; else the one beside this
    Python; else the first on PATH.
    """
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is not None and script.stem == "dsifn" and script.is_file():
        return os.path.abspath(script)
    beside = Path(sys.executable).parent / ("dsifn.exe" if os.name == "nt" else "dsifn")
    if beside.is_file():
        return str(beside)
    found = shutil.which("dsifn")
    return os.path.abspath(found) if found else None


def plugin_files() -> Iterator[tuple[Path, str]]:
    """Each file of the plugin and its path inside the plugin folder (``/``-separated)."""
    for path in sorted(PLUGIN_SOURCE.rglob("*")):
        relative = path.relative_to(PLUGIN_SOURCE)
        skipped = any(s in relative.parts or path.name.endswith(s) for s in _SKIPPED)
        if path.is_file() and not skipped:
            yield path, relative.as_posix()


def _record(executable: str | None) -> str:
    return json.dumps({"dsifn": executable, "dsifn_version": __version__}, indent=2) + "\n"


def _metadata(path: Path) -> str:
    """``metadata.txt`` with the version of the dsifn that installs the plugin."""
    text = path.read_text(encoding="utf-8")
    return re.sub(r"^version=.*$", f"version={__version__}", text, count=1, flags=re.MULTILINE)


def _contents(executable: str | None) -> Iterator[tuple[str, bytes]]:
    """What an installed plugin holds: each file's path in the plugin folder and its bytes.

    The plugin's files, ``metadata.txt`` with this version, and the record last.
    """
    for path, name in plugin_files():
        metadata = name == "metadata.txt"
        yield name, _metadata(path).encode("utf-8") if metadata else path.read_bytes()
    yield RECORD, _record(executable).encode("utf-8")


def _write_tree(folder: Path, executable: str | None) -> None:
    """Write the plugin's files and its record into ``folder``."""
    for name, data in _contents(executable):
        target = folder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


def install_plugin(
    profile: str | None = None,
    *,
    overwrite: bool = False,
    executable: str | None = None,
    profiles: Path | None = None,
) -> InstalledPlugin:
    """Copy the plugin into a QGIS profile and enable it there.

    Args:
        profile: The profile's name; None: QGIS's default profile.
        overwrite: Replace an installed copy.
        executable: The dsifn executable to record; None: :func:`dsifn_executable`.
        profiles: QGIS's profiles folder; None: :func:`profiles_folder`.

    Raises:
        OutputExistsError: If the plugin is installed and ``overwrite`` is false.
        ConfigError: If the profile does not exist or its plugin folder cannot be written.
    """
    profiles = profiles_folder() if profiles is None else profiles
    plugins = plugins_folder(profile, profiles)
    final = plugins / PLUGIN_NAME
    if final.exists() and not overwrite:
        raise OutputExistsError(
            f"the plugin is installed in {final}; pass `overwrite=True` to replace it"
        )
    check_output_folder(plugins)
    plugins.mkdir(parents=True, exist_ok=True)
    executable = dsifn_executable() if executable is None else executable
    with work_folder(plugins) as work:
        staged = Path(work) / PLUGIN_NAME
        _write_tree(staged, executable)
        move_into_place(staged, final)
    settings = enable_in_settings(plugins.parent.parent / "QGIS" / "QGIS3.ini")
    return InstalledPlugin(folder=final, executable=executable, enabled=settings)


def enable_in_settings(ini: Path) -> Path:
    """Mark the plugin enabled (``[PythonPlugins] dsifn_change=true``) in a profile's settings.

    The file is edited as text, keeping every other line as QGIS wrote it, and replaced
    atomically. QGIS reads it at start: a running QGIS needs a restart.
    """
    text = ini.read_text(encoding="utf-8") if ini.is_file() else ""
    ini.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(ini, overwrite=True) as tmp:
        tmp.write_text(enable_line(text), encoding="utf-8")
    return ini


def enable_line(text: str) -> str:
    """``text`` (a QSettings ini file) with ``dsifn_change=true`` in ``[PythonPlugins]``."""
    line = f"{PLUGIN_NAME}=true"
    lines = text.splitlines()
    start = next((i for i, s in enumerate(lines) if s.strip() == "[PythonPlugins]"), None)
    if start is None:
        prefix = text if not text or text.endswith("\n") else text + "\n"
        gap = "\n" if prefix.strip() else ""
        return f"{prefix}{gap}[PythonPlugins]\n{line}\n"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    for i in range(start + 1, end):
        if lines[i].split("=", 1)[0].strip() == PLUGIN_NAME:
            lines[i] = line
            break
    else:
        lines.insert(start + 1, line)
    return "\n".join(lines) + "\n"


def write_plugin_zip(
    out: str | os.PathLike[str], *, overwrite: bool = False, executable: str | None = None
) -> Path:
    """Write the zip QGIS's "Install from ZIP" takes: ``dsifn_change/`` and its files.

    Raises:
        OutputExistsError: If ``out`` exists and ``overwrite`` is false.
    """
    if Path(out).suffix.lower() != ".zip":
        raise ConfigError(f"QGIS installs plugins from a .zip file; name it .zip, not {out}")
    executable = dsifn_executable() if executable is None else executable
    with (
        atomic_path(out, overwrite=overwrite) as tmp,
        zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        for name, data in _contents(executable):
            archive.writestr(f"{PLUGIN_NAME}/{name}", data)
    return Path(out)
