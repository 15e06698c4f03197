"""Private work folders beside a scene's outputs, and its outputs moved into place together.

A scene prediction writes its working raster and every output under a ``.dsifn-*`` folder next
to where the output goes (the same file system, so the final move is a rename) and moves them
into place only when all are complete, so an error or interrupt before then leaves none.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from dsifn.io.atomic import check_output_path, move_into_place

__all__ = ["remove_stale", "staged", "work_folder"]

_OWNER = "owner"  # "HOST PID" of the run that made a work folder


def work_folder(parent: Path) -> tempfile.TemporaryDirectory[str]:
    """A private ``.dsifn-*`` folder beside the outputs, after removing stale ones.

    A run killed outright (SIGKILL, power loss) cannot clean up; its folder names its owner, and
    the next run in that folder removes it once that process is gone.
    """
    remove_stale(parent)
    folder = tempfile.TemporaryDirectory(prefix=".dsifn-", dir=parent)
    (Path(folder.name) / _OWNER).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return folder


def remove_stale(parent: Path) -> None:
    """Remove ``.dsifn-*`` folders whose owner, a process on this host, no longer runs.

    Folders without an owner file, of another host, or of a live (or unknown) process are left:
    only what is surely a dead run's working data goes. (Processes of one ``torchrun`` job
    writing into one folder are alive, so they never remove each other's folders.)
    """
    host = socket.gethostname()
    for folder in parent.glob(".dsifn-*"):
        try:
            owner_host, pid = (folder / _OWNER).read_text().split()
            if owner_host != host or _alive(int(pid)):
                continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@contextlib.contextmanager
def staged(finals: Sequence[Path], *, overwrite: bool) -> Iterator[list[Path]]:
    """Yield a path per output, under its real name in a private folder beside it.

    When the block succeeds all are moved into place, the first (the map) last, so a map on
    disk means its polygons and quicklook are there too; when it raises, none are.
    """
    for final in finals:
        check_output_path(final, overwrite=overwrite)
    with contextlib.ExitStack() as stack:
        paths = []
        for final in finals:
            final.parent.mkdir(parents=True, exist_ok=True)
            folder = stack.enter_context(work_folder(final.parent))
            paths.append(Path(folder) / final.name)
        yield paths
        for final in finals:  # one appeared while writing: replace nothing
            check_output_path(final, overwrite=overwrite)
        for path, final in reversed(list(zip(paths, finals, strict=True))):
            move_into_place(path, final)
