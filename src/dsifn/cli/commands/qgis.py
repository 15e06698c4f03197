"""``dsifn qgis install``: put the QGIS plugin into a QGIS profile, or into a zip for QGIS."""

from __future__ import annotations

import argparse

from dsifn.cli.options import add_overwrite_option

NAME = "qgis"
HELP = "install the QGIS plugin (Processing algorithm dsifn:detectchange)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``qgis``'s action and options."""
    parser.add_argument(
        "action",
        choices=("install",),
        help="install: copy the plugin into a QGIS profile and enable it",
    )
    parser.add_argument(
        "--profile",
        help="QGIS user profile to install into [QGIS's default profile, usually 'default']",
    )
    parser.add_argument(
        "--zip",
        metavar="OUT",
        help="write the plugin as a zip for QGIS's Plugins > Install from ZIP instead",
    )
    add_overwrite_option(parser)


def run(args: argparse.Namespace) -> int:
    """Install the plugin (or write its zip) and say where, and what it will run."""
    from dsifn.errors import ConfigError
    from dsifn.qgis.install import dsifn_executable, install_plugin, write_plugin_zip

    executable = dsifn_executable()
    if args.zip is not None:
        if args.profile is not None:
            raise ConfigError("--zip writes a file for any profile: give --zip or --profile")
        out = write_plugin_zip(args.zip, overwrite=args.overwrite, executable=executable)
        print(f"wrote {out}: in QGIS, Plugins > Manage and Install Plugins > Install from ZIP")
    else:
        done = install_plugin(args.profile, overwrite=args.overwrite, executable=executable)
        print(f"installed the QGIS plugin in {done.folder} and enabled it in {done.enabled}")
        print("restart QGIS: the toolbox shows dsifn > Change detection > Detect change (DSIFN)")
    if executable is None:
        print("note: no dsifn executable found here; the plugin will look for dsifn on QGIS's PATH")
    else:
        print(f"the plugin runs {executable} (Settings > Options > Processing > Providers > dsifn)")
    return 0
