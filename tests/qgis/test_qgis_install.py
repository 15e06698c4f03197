"""``dsifn qgis install``: the profile folder QGIS uses, a checked and atomic copy, the zip."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import pytest

from dsifn import __version__
from dsifn.cli.main import main
from dsifn.errors import ConfigError, OutputExistsError
from dsifn.qgis import install
from fixtures.qgis import dsifn_executable

PLUGIN_FILES = {"__init__.py", "algorithm.py", "command.py", "metadata.txt", "plugin.py"}


def test_profiles_folder_as_qgis_finds_it(tmp_path):
    home = tmp_path / "home"
    cases = [
        ({"QGIS_CUSTOM_CONFIG_PATH": "/cfg"}, "linux", Path("/cfg/profiles")),
        ({}, "linux", home / ".local/share/QGIS/QGIS3/profiles"),
        ({"XDG_DATA_HOME": "/xdg"}, "linux", Path("/xdg/QGIS/QGIS3/profiles")),
        ({}, "darwin", home / "Library/Application Support/QGIS/QGIS3/profiles"),
        ({"APPDATA": "/appdata"}, "win32", Path("/appdata/QGIS/QGIS3/profiles")),
    ]
    for env, platform, expected in cases:
        assert install.profiles_folder(env, platform, home) == expected, (env, platform)


def test_the_default_profile_is_qgis_default(tmp_path):
    assert install.plugins_folder(None, tmp_path) == tmp_path / "default/python/plugins"
    (tmp_path / "profiles.ini").write_text("[core]\ndefaultProfile=work\n")
    (tmp_path / "work").mkdir()
    assert install.plugins_folder(None, tmp_path) == tmp_path / "work/python/plugins"
    assert install.plugins_folder("work", tmp_path) == tmp_path / "work/python/plugins"


def test_a_named_profile_that_does_not_exist_is_refused(tmp_path):
    (tmp_path / "default").mkdir()
    with pytest.raises(ConfigError, match=r"'home' does not exist .*profiles: default"):
        install.plugins_folder("home", tmp_path)
    with pytest.raises(ConfigError, match="a name"):
        install.plugins_folder("../x", tmp_path)


def test_install_copies_records_enables_and_refuses_to_replace(tmp_path):
    done = install.install_plugin(executable="/env/bin/dsifn", profiles=tmp_path)
    folder = tmp_path / "default/python/plugins/dsifn_change"
    assert done.folder == folder and done.executable == "/env/bin/dsifn"
    assert PLUGIN_FILES <= {p.name for p in folder.iterdir()}
    assert not list(folder.rglob("__pycache__"))
    assert json.loads((folder / "installed.json").read_text()) == {
        "dsifn": "/env/bin/dsifn",
        "dsifn_version": __version__,
    }
    assert f"version={__version__}\n" in (folder / "metadata.txt").read_text()
    ini = tmp_path / "default/QGIS/QGIS3.ini"
    assert done.enabled == ini and "[PythonPlugins]\ndsifn_change=true\n" in ini.read_text()
    (folder / "mine.txt").write_text("user file")
    with pytest.raises(OutputExistsError, match="overwrite"):
        install.install_plugin(profiles=tmp_path)
    install.install_plugin(overwrite=True, executable="/other/dsifn", profiles=tmp_path)
    assert not (folder / "mine.txt").exists()  # replaced as a whole
    assert json.loads((folder / "installed.json").read_text())["dsifn"] == "/other/dsifn"
    assert [p.name for p in folder.parent.iterdir()] == ["dsifn_change"]  # no work folder left


def test_enabling_keeps_every_other_setting():
    assert install.enable_line("") == "[PythonPlugins]\ndsifn_change=true\n"
    text = "[qgis]\nsymbolsListGroupsIndex=0\n"
    assert install.enable_line(text) == f"{text}\n[PythonPlugins]\ndsifn_change=true\n"
    text = "[PythonPlugins]\nprocessing=true\ndsifn_change=false\n\n[qgis]\na=1\n"
    assert install.enable_line(text) == (
        "[PythonPlugins]\nprocessing=true\ndsifn_change=true\n\n[qgis]\na=1\n"
    )
    text = "[PythonPlugins]\nprocessing=true\n[qgis]\na=1"
    assert install.enable_line(text) == (
        "[PythonPlugins]\ndsifn_change=true\nprocessing=true\n[qgis]\na=1\n"
    )


def test_the_zip_holds_one_plugin_folder(tmp_path):
    out = install.write_plugin_zip(tmp_path / "p.zip", executable="/env/bin/dsifn")
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        record = json.loads(archive.read("dsifn_change/installed.json"))
    assert {name.split("/")[0] for name in names} == {"dsifn_change"}
    assert {f"dsifn_change/{name}" for name in PLUGIN_FILES} <= set(names)
    assert record["dsifn"] == "/env/bin/dsifn"
    with pytest.raises(OutputExistsError):
        install.write_plugin_zip(out)
    with pytest.raises(ConfigError, match=r"\.zip"):
        install.write_plugin_zip(tmp_path / "p.tar")


def test_the_command_installs_into_qgis_custom_config_path(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("QGIS_CUSTOM_CONFIG_PATH", str(tmp_path))
    monkeypatch.setattr(sys, "argv", ["pytest"])  # not the dsifn script: found beside Python
    assert main(["qgis", "install"]) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "profiles/default/python/plugins/dsifn_change"
    assert f"installed the QGIS plugin in {folder}" in out
    assert json.loads((folder / "installed.json").read_text())["dsifn"] == dsifn_executable()
    assert main(["qgis", "install"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["qgis", "install", "--profile", "nope"]) == 2
    assert "'nope' does not exist" in capsys.readouterr().err
    assert main(["qgis", "install", "--zip", str(tmp_path / "p.zip"), "--profile", "x"]) == 2
    assert main(["qgis", "install", "--zip", str(tmp_path / "p.zip")]) == 0
    assert "Install from ZIP" in capsys.readouterr().out
