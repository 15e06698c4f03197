"""Progress reporting: a tqdm bar on a terminal, a few plain lines in a log, JSON for programs.

A redrawing bar written into a file is thousands of carriage-return lines; where standard error
is not a terminal every command prints one line per tenth of the work instead, and one at the end,
e.g. ``dsifn predict: 40 % (120/300 tiles)``. A program that runs dsifn (the QGIS plugin) asks
for ``--progress json``: one JSON object a line, at the start, at every percent and at the end,
e.g. ``{"progress": 0.4, "done": 120, "total": 300, "unit": "tile", "desc": "dsifn predict"}``.
Every progress display in dsifn is made here.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from types import TracebackType
from typing import Any, Literal, Protocol, get_args

__all__ = [
    "PROGRESS_MODES",
    "Bar",
    "JsonProgress",
    "PlainProgress",
    "ProgressMode",
    "progress_bar",
    "progress_mode",
    "write",
]

ProgressMode = Literal["auto", "json", "none"]
"""auto: a bar on a terminal, plain lines otherwise; json: JSON lines; none: nothing."""
PROGRESS_MODES: tuple[str, ...] = get_args(ProgressMode)

STEP_PERCENT = 10
"""Plain progress prints a line each time this many more percent of the work is done."""

QUIET_SECONDS = 10.0
"""Plain progress stays silent for work done this soon (a quick run, or one that fails early,
whose error is then the only line on standard error)."""

_mode: list[ProgressMode] = ["auto"]  # the mode of the innermost progress_mode block


@contextlib.contextmanager
def progress_mode(mode: ProgressMode) -> Iterator[None]:
    """Show every progress display made in the block as ``mode`` says.

    The command line sets it from ``--progress`` (``--quiet`` is ``none``) around a command.

    Raises:
        ValueError: If ``mode`` is not one of :data:`PROGRESS_MODES`.
    """
    if mode not in PROGRESS_MODES:
        raise ValueError(f"progress mode must be one of {', '.join(PROGRESS_MODES)}; got {mode!r}")
    _mode.append(mode)
    try:
        yield
    finally:
        _mode.pop()


class Bar(Protocol):
    """What callers use of a progress display (tqdm's own names)."""

    def update(self, n: int = 1) -> object:
        """Count ``n`` more units done."""

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Rename what is being done."""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Show figures after the count (e.g. ``loss=0.31``)."""

    def close(self) -> None:
        """Finish the display."""


class PlainProgress:
    """Plain-line progress: a line at every :data:`STEP_PERCENT` of ``total`` and at close.

    Args:
        total: Units of work; None when unknown (then only the closing line is printed).
        desc: What is being done, the start of each line.
        unit: Name of one unit (``tile``; printed as ``tiles``).
        initial: Units already done (a resumed epoch).
        enabled: False: print nothing at all.
        iterable: Iterate over this, counting one unit per item.
        stream: Where lines go; None: standard error at the time of each line.
    """

    step_percent = STEP_PERCENT  # a line each time this many more percent are done
    announce_start = False  # a first line when the work begins

    def __init__(
        self,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        *,
        initial: int = 0,
        enabled: bool = True,
        iterable: Iterable[Any] | None = None,
        stream: Any = None,
    ) -> None:
        if total is None and isinstance(iterable, Sized):
            total = len(iterable)
        self.total = total
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.enabled = enabled
        self._iterable = iterable
        self._stream = stream
        self._postfix = ""
        self._reported = self._step()  # the step already passed when resuming is not repeated
        self._closed = False
        self._start = time.monotonic()
        if self.announce_start:
            self._print()

    def _step(self) -> int:
        if not self.total:
            return 0
        return min(self.n, self.total) * 100 // self.total // self.step_percent

    def _line(self) -> str:
        units = _plural(self.unit)
        if self.total:
            percent = min(self.n, self.total) * 100 // self.total
            text = f"{percent} % ({self.n}/{self.total} {units})"
        else:
            text = f"{self.n} {units}"
        prefix = f"{self.desc}: " if self.desc else ""
        suffix = f" {self._postfix}" if self._postfix else ""
        return f"{prefix}{text}{suffix}"

    def _quiet_seconds(self) -> float:
        return QUIET_SECONDS

    def _print(self) -> None:
        if self.enabled and time.monotonic() - self._start >= self._quiet_seconds():
            stream = sys.stderr if self._stream is None else self._stream
            print(self._line(), file=stream, flush=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units done; print a line when a new tenth is reached."""
        self.n += n
        step = self._step()
        if step > self._reported:
            self._reported = step
            self._print()

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Rename what is being done (used by the next line printed)."""
        self.desc = desc or ""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Figures printed after the count on the next line, as ``name=value``."""
        parts = [str(a) for a in args] + [f"{k}={v}" for k, v in kwargs.items()]
        self._postfix = " ".join(parts)

    def close(self) -> None:
        """Print the closing line unless the last line already said 100 %."""
        if self._closed:
            return
        self._closed = True
        finished = self.total is not None and self.total > 0 and self.n >= self.total
        if not (finished and self._reported * self.step_percent >= 100):
            self._print()

    def __iter__(self) -> Iterator[Any]:
        if self._iterable is None:
            raise TypeError("this progress display was made without an iterable")
        try:
            for item in self._iterable:
                yield item
                self.update(1)
        except BaseException:
            self._closed = True
            raise
        finally:
            self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is not None:  # the error's own line says what happened; no closing count
            self._closed = True
        self.close()


class JsonProgress(PlainProgress):
    """Progress for programs: a JSON object a line, at the start, at every percent, at the end.

    Each line holds ``progress`` (the fraction done, null when the total is unknown), ``done``,
    ``total``, ``unit`` and ``desc``. Lines are printed at once, however quick the work; an
    error adds no closing line (the error's own line follows).

    Args:
        total: Units of work; None when unknown.
        desc: What is being done.
        unit: Name of one unit.
        initial: Units already done.
        enabled: False: print nothing at all.
        iterable: Iterate over this, counting one unit per item.
        stream: Where lines go; None: standard error at the time of each line.
    """

    step_percent = 1
    announce_start = True  # a first line at once: a program sees the work has begun

    def _quiet_seconds(self) -> float:
        return 0.0  # however quick the work

    def _line(self) -> str:
        fraction = None if not self.total else round(min(self.n, self.total) / self.total, 4)
        record = {
            "progress": fraction,
            "done": self.n,
            "total": self.total,
            "unit": self.unit,
            "desc": self.desc,
        }
        return json.dumps(record)


def _plural(unit: str) -> str:
    if unit.endswith(("s", "x", "ch", "sh")):
        return f"{unit}es"
    return f"{unit}s"


def _terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    *,
    enabled: bool = True,
    initial: int = 0,
    leave: bool = True,
    iterable: Iterable[Any] | None = None,
) -> Any:
    """A progress display: a tqdm bar on a terminal, :class:`PlainProgress` lines otherwise.

    Inside :func:`progress_mode` ``"json"`` it is a :class:`JsonProgress`, and inside
    ``"none"`` it shows nothing. All have ``update``, ``set_description``, ``set_postfix``,
    ``close``, work as context managers and, given ``iterable``, iterate over it.

    Args:
        total: Units of work (None: the length of ``iterable``, if it has one).
        desc: What is being done.
        unit: Name of one unit.
        enabled: False: show nothing.
        initial: Units already done.
        leave: Keep the finished bar on the terminal (plain lines always stay).
        iterable: Iterate over this, one unit per item.

    Returns:
        The display (typed ``Any``: it is iterated as ``iterable``'s items).
    """
    mode = _mode[-1]
    enabled = enabled and mode != "none"
    if enabled and mode == "json":
        return JsonProgress(total, desc, unit, initial=initial, iterable=iterable)
    if enabled and _terminal():
        from tqdm.auto import tqdm

        return tqdm(
            iterable,
            total=total,
            desc=desc,
            unit=unit,
            initial=initial,
            leave=leave,
            dynamic_ncols=True,
        )
    return PlainProgress(total, desc, unit, initial=initial, enabled=enabled, iterable=iterable)


def write(text: str) -> None:
    """Print a line of results on standard output without breaking a bar being drawn."""
    from tqdm.auto import tqdm

    tqdm.write(text)
