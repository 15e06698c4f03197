"""Entry point of the ``dsifn`` command.

Each sub-command is a module in :mod:`dsifn.cli.commands` that defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are found at start-up, so adding a
command is adding a file. Heavy imports belong inside ``run``.

Errors a user can cause (:class:`dsifn.errors.DSIFNError`, missing files, bad values) print one
line on standard error and exit with status 2; an interrupt exits with 130.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from dsifn._version import __version__
from dsifn.cli import commands
from dsifn.errors import DSIFNError

__all__ = ["build_parser", "main"]


def _command_modules() -> list[ModuleType]:
    found = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return found


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="dsifn",
        description="DSIFN change detection for bi-temporal images (Zhang et al., 2020).",
    )
    parser.add_argument("--version", action="version", version=f"dsifn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("dsifn: interrupted", file=sys.stderr)
        return 130
    except (DSIFNError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        print(f"dsifn {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
