"""Running the dsifn command as a child process: its lines as they come, and cancelling it.

Pure Python with no QGIS import. The child's standard output and error are read by two threads
into one queue; the caller's thread (Processing's task thread, which never blocks the
interface) takes the lines, reports them, and polls for Cancel. Cancel asks the child to stop
(SIGTERM; CTRL_BREAK on Windows), upon which dsifn removes its work files and exits (143; 130
on Windows); a child still running after a grace period is killed.

SIGTERM rather than SIGINT: a program started in the background of a shell script inherits
SIGINT ignored (so do QGIS and its children when QGIS was started that way), and dsifn,
like Python, leaves an ignored SIGINT ignored; it always handles SIGTERM itself.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

from .command import Progress, parse_progress

POLL_SECONDS = 0.1
"""How often Cancel is checked while the child says nothing."""
GRACE_SECONDS = 30.0
"""How long a child asked to stop has to clean up before it is killed."""


@dataclass
class Outcome:
    """How a run ended, and what the child said."""

    returncode: int
    canceled: bool
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Listener:
    """What to do with the child's lines, and how to know the user cancelled."""

    progress: Callable[[Progress], None]  # a --progress json line
    message: Callable[[str], None]  # any other line of standard error
    output: Callable[[str], None]  # a line of standard output
    canceled: Callable[[], bool]  # polled while the child runs


def run(argv: Sequence[str], env: Mapping[str, str], listener: Listener) -> Outcome:
    """Run ``argv`` to its end or until cancelled, reporting its lines as they come.

    Raises:
        OSError: If the program cannot be started.
    """
    child = subprocess.Popen(
        list(argv),
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
        **_own_group(),
    )
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    readers = [_reader(child.stdout, "out", lines), _reader(child.stderr, "err", lines)]
    outcome = Outcome(returncode=0, canceled=False)
    try:
        _follow(child, lines, listener, outcome)
    finally:
        if child.poll() is None:  # an error in a listener: leave no child behind
            _stop(child)
        for reader in readers:
            reader.join(timeout=5)
    outcome.returncode = child.wait()
    return outcome


def _follow(
    child: subprocess.Popen[str],
    lines: queue.Queue[tuple[str, str | None]],
    listener: Listener,
    outcome: Outcome,
) -> None:
    """Report lines until both streams end; ask the child to stop on Cancel, kill it if late."""
    open_streams, asked_at = 2, None
    while open_streams:
        if asked_at is None and listener.canceled():
            outcome.canceled, asked_at = True, time.monotonic()
            _ask_to_stop(child)
        if asked_at is not None and time.monotonic() - asked_at > GRACE_SECONDS:
            child.kill()
            asked_at = float("inf")  # killed: wait for the streams to close
        try:
            stream, line = lines.get(timeout=POLL_SECONDS)
        except queue.Empty:
            continue
        if line is None:
            open_streams -= 1
        elif stream == "out":
            outcome.stdout.append(line)
            listener.output(line)
        else:
            _stderr_line(line, listener, outcome)


def _stderr_line(line: str, listener: Listener, outcome: Outcome) -> None:
    progress = parse_progress(line)
    if progress is not None:
        listener.progress(progress)
        return
    outcome.stderr.append(line)
    listener.message(line)


def _reader(
    stream: IO[str] | None, name: str, lines: queue.Queue[tuple[str, str | None]]
) -> threading.Thread:
    """A thread putting each line of ``stream`` on ``lines``, then None when it ends."""

    def read() -> None:
        if stream is not None:
            for line in stream:
                lines.put((name, line.rstrip("\r\n")))
            stream.close()
        lines.put((name, None))

    thread = threading.Thread(target=read, name=f"dsifn-{name}", daemon=True)
    thread.start()
    return thread


def _own_group() -> dict[str, object]:
    """Start the child in a process group of its own, which Windows needs for CTRL_BREAK."""
    if os.name == "nt":
        flags = subprocess.CREATE_NEW_PROCESS_GROUP | subprocess.CREATE_NO_WINDOW
        return {"creationflags": flags}
    return {"start_new_session": True}


def _ask_to_stop(child: subprocess.Popen[str]) -> None:
    """Ask the child to stop in a way it cleans up after (on Windows, CTRL_BREAK)."""
    try:
        if os.name == "nt":
            child.send_signal(signal.CTRL_BREAK_EVENT)
        else:
            child.send_signal(signal.SIGTERM)
    except OSError:
        child.terminate()


def _stop(child: subprocess.Popen[str]) -> None:
    _ask_to_stop(child)
    try:
        child.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
