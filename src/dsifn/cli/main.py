"""Entry point of the ``dsifn`` command.

Each sub-command is a module in :mod:`dsifn.cli.commands` that defines ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``; modules are found at start-up, so adding a
command is adding a file. Heavy imports belong inside ``run``.

Errors a user can cause (:class:`dsifn.errors.DSIFNError`, missing files, bad values, an output
folder that cannot be written, a bad option) print one line on standard error and exit with
status 2 (library messages name parameters; :mod:`dsifn.cli.flags` writes them as the
command's flags); an interrupt exits with 130 and SIGTERM with 143, both after cleaning up
(on Windows CTRL_BREAK, which a program sends to stop a child, counts as an interrupt).

Every command takes ``--progress {auto,json,none}`` (:mod:`dsifn.progress`); a command's own
``--quiet`` means ``none``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType, ModuleType
from typing import Any, NoReturn

from dsifn._version import __version__
from dsifn.cli import commands
from dsifn.cli.flags import in_flags
from dsifn.cli.options import add_progress_option
from dsifn.errors import DSIFNError
from dsifn.progress import ProgressMode, progress_mode

__all__ = ["build_parser", "main"]


def _command_modules() -> list[ModuleType]:
    found = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            found.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return found


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, like every other error."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every sub-command."""
    parser = _Parser(
        prog="dsifn",
        description="DSIFN change detection for bi-temporal images (Zhang et al., 2020).",
    )
    parser.add_argument("--version", action="version", version=f"dsifn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        add_progress_option(command)
        command.set_defaults(_run=module.run, _parser=command)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised in the main thread so ``finally`` blocks and context managers run."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _catch_stop_signals() -> dict[int, Any]:
    """Turn SIGTERM (and Windows' CTRL_BREAK) into exceptions; return the handlers replaced.

    Signal handlers can only be set in the main thread; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: dict[int, Any] = {signal.SIGTERM: signal.signal(signal.SIGTERM, _terminate)}
    brk = getattr(signal, "SIGBREAK", None)  # Windows only
    if brk is not None:
        previous[brk] = signal.signal(brk, _interrupt)
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    previous = _catch_stop_signals()
    mode: ProgressMode = "none" if getattr(args, "quiet", False) else args.progress
    try:
        with progress_mode(mode):
            return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("dsifn: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("dsifn: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except (DSIFNError, OSError) as exc:
        if isinstance(exc, OSError) and not _users_os_error(exc):
            raise
        message = in_flags(_one_line(exc), getattr(args, "_parser", None))
        print(f"dsifn {args.command}: error: {message}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _users_os_error(exc: OSError) -> bool:
    """Whether an OSError is about the user's files and disks (a missing file, a full disk).

    Those carry an errno (or are the file errors dsifn raises itself); other OSErrors are
    reported with their traceback, as bugs are.
    """
    own = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
    return exc.errno is not None or isinstance(exc, (*own, FileExistsError))


# torch re-raises an error of a DataLoader worker in the main process as the same exception
# class, with the worker's whole formatted traceback as its message.
_TRACEBACK_HEADER = "Traceback (most recent call last):"
_EXCEPTION_LINE = re.compile(r"(?P<type>[A-Za-z_][\w.]*)(?:: (?P<message>.*))?", re.DOTALL)


def _original_message(text: str, type_name: str) -> str:
    """The original exception's message, from a text holding a formatted traceback."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.rstrip().endswith(_TRACEBACK_HEADER)]
    if not starts:
        return text
    tail = lines[starts[-1] + 1 :]  # the last traceback: the error finally raised
    first = next((i for i, line in enumerate(tail) if line and not line[0].isspace()), None)
    if first is None:
        return text
    found = _EXCEPTION_LINE.fullmatch("\n".join(tail[first:]))
    if found is None or found["type"].rsplit(".", 1)[-1] != type_name:
        return "\n".join(tail[first:])
    return found["message"] or type_name


def _one_line(exc: BaseException) -> str:
    """The error as one line: worker tracebacks dropped, whitespace folded."""
    text = str(exc) or exc.__class__.__name__
    text = _original_message(text, exc.__class__.__name__)
    text = re.sub(r"^\[Errno \d+\] ", "", text)  # the same words with and without workers
    if isinstance(exc, OSError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
