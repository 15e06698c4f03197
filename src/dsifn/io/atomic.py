"""Paths checked before any work, and outputs staged so that a crash never leaves a bad one.

An output is checked up front (:func:`check_output_path`, :func:`check_output_folder`): an
existing file is kept unless overwriting was asked for, and a path that cannot be written at
all (a folder where a file goes, a file where a folder must be) is refused whatever the
overwrite flag says, so a long run never fails at its last step.

Every output of the package is then written through :func:`staged`, the one staged write: the
files are written under their own names in a private ``.dsifn-*`` folder beside where they go
(the same file system, so the final move is a rename), synced to disk, and moved into place
together only when all are complete. An exception, an interrupt or a power loss leaves the old
files or the complete new ones under the final names, never a truncated one.
:func:`atomic_path` is :func:`staged` for one file. A run killed outright (SIGKILL) cannot
clean up; its folder names its owner and the next run beside it removes it
(:func:`remove_stale`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from dsifn.errors import ConfigError, DSIFNError, OutputExistsError

__all__ = [
    "atomic_path",
    "check_input_file",
    "check_output_folder",
    "check_output_path",
    "file_sha256",
    "move_into_place",
    "remove_stale",
    "staged",
    "sync_tree",
    "work_folder",
]

_OWNER = "owner"  # "HOST PID" of the run that made a work folder


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex, read a MiB at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_input_file(
    path: str | os.PathLike[str], what: str, error: type[DSIFNError] = ConfigError
) -> Path:
    """Refuse an input file that is missing, or a folder given where a file is expected.

    Args:
        path: The file to read.
        what: What the file is, for the message (``"checkpoint"``, ``"Keras file"``).
        error: The exception class to raise.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        DSIFNError: Of class ``error``, saying which of the two it is.
    """
    file = Path(path)
    if file.is_dir():
        raise error(f"{what} {file} is a folder, not a file")
    if not file.is_file():
        raise error(f"{what} {file} does not exist")
    return file


def _check_parent(out: Path, kind: str) -> None:
    """Refuse an output whose nearest existing ancestor is a file or is not writable."""
    for parent in out.parents:  # nearest first; a relative path ends in "."
        if not (parent.exists() or parent.is_symlink()):
            continue
        if not parent.is_dir():
            raise ConfigError(f"cannot write {kind} {out}: {parent} is a file, not a folder")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ConfigError(f"cannot write {kind} {out}: folder {parent} is not writable")
        return


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse an output file that exists (unless overwriting) or cannot be written at all.

    Args:
        path: Where an output file will be written.
        overwrite: Whether replacing an existing file is allowed.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        OutputExistsError: If ``path`` exists and ``overwrite`` is false.
        ConfigError: If ``path`` is a folder, or a file sits where one of its folders must be,
            or the folder it goes in is not writable (whatever ``overwrite`` says).
    """
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{out} is a folder, not a file: name the file to write")
    _check_parent(out, "file")
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise OutputExistsError(f"{out} exists; pass `overwrite=True` to replace it")
    return out


def check_output_folder(path: str | os.PathLike[str]) -> Path:
    """Refuse an output folder that is a file, or that cannot be created.

    Whether an existing folder's contents may be replaced is the caller's decision.

    Args:
        path: A folder that will be created if needed and written into.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        ConfigError: If ``path`` is a file or a file sits where one of its parents must be.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"cannot write into folder {out}: it is a file")
    if not out.is_dir():
        _check_parent(out, "folder")
    return out


def _fsync(path: Path, *, folder: bool = False) -> None:
    """Flush a file's (or a folder's entries') data to the disk."""
    if folder and os.name == "nt":  # Windows cannot open a folder; its renames are durable
        return
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(path: Path) -> None:
    """Flush a file, or every file and folder under a folder, to the disk."""
    if path.is_dir():
        for sub in sorted(path.rglob("*")):
            _fsync(sub, folder=sub.is_dir())
    _fsync(path, folder=path.is_dir())


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename a complete file (or folder) onto its final path, durably.

    The data is synced before the rename and the folder's entry after it, so a power loss
    leaves the old file or the new one whole, never an empty one. A folder replaces an
    existing folder of that name (moved aside first, then removed; put back if the new one
    cannot be moved in).
    """
    sync_tree(tmp)
    if tmp.is_dir() and final.is_dir():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            os.replace(old, final)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync(final.parent, folder=True)


def work_folder(parent: Path) -> tempfile.TemporaryDirectory[str]:
    """A private ``.dsifn-*`` folder in ``parent`` (or the nearest folder above it that exists).

    No folder is created for it: a run that fails leaves the tree as it found it. Stale
    folders there are removed first. It names its owner (host and process), so that a later
    run can tell a dead run's folder from a live one's (:func:`remove_stale`).
    """
    parent = _existing_folder(parent)
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
def staged(
    finals: Sequence[str | os.PathLike[str]], *, overwrite: bool | Sequence[bool] = False
) -> Iterator[list[Path]]:
    """Yield a path per output in a private folder; move them all into place when done.

    Each output is written under its own name (and the folders between) inside a private
    ``.dsifn-*`` folder in the nearest existing folder above it, so the final move is a rename
    and no folder is created before the block succeeds. Outputs that share a folder share it,
    so a writer that puts a companion file beside its output (an OpenVINO ``.bin`` beside its
    ``.xml``) finds it there.

    When the block succeeds, every output is checked again (one that appeared meanwhile is not
    replaced without ``overwrite``), synced and renamed into place in reverse order, the first
    output last: whoever finds the first finds the others complete. An existing output is
    moved aside first; if a rename fails, the outputs already moved are put back, so the old
    files stay as they were. When the block raises, nothing is moved and the private folders
    are removed.

    Args:
        finals: The outputs' final paths; the first is the one readers look for.
        overwrite: Allow replacing existing files: one flag for all, or one per output.

    Yields:
        The paths to write to, in the order of ``finals``.
    """
    allowed = [overwrite] * len(finals) if isinstance(overwrite, bool) else list(overwrite)
    targets = [
        Path(os.path.abspath(check_output_path(final, overwrite=ok)))
        for final, ok in zip(finals, allowed, strict=True)
    ]
    with contextlib.ExitStack() as stack:
        folders: dict[Path, Path] = {}  # nearest existing folder -> its private folder
        paths, homes = [], []
        for final in targets:
            anchor = _existing_folder(final.parent)
            if anchor not in folders:
                folders[anchor] = Path(stack.enter_context(work_folder(anchor)))
            path = folders[anchor] / final.relative_to(anchor)
            path.parent.mkdir(parents=True, exist_ok=True)
            paths.append(path)
            homes.append(folders[anchor])
        yield paths
        for final, ok in zip(targets, allowed, strict=True):
            if not ok and (final.exists() or final.is_symlink()):
                raise OutputExistsError(f"{final} appeared while writing; not replaced")
        for path, final in zip(paths, targets, strict=True):
            if not path.exists():
                raise RuntimeError(f"{final}: the staged output was never written")
        _swap_in(paths, targets, homes)


def _existing_folder(folder: Path) -> Path:
    """``folder``, or the nearest folder above it that exists."""
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


def _swap_in(paths: Sequence[Path], finals: Sequence[Path], folders: Sequence[Path]) -> None:
    """Move staged outputs into place, last first; on a failure put the old files back."""
    done: list[tuple[Path, Path | None]] = []  # (final, where its old file went)
    try:
        for index in reversed(range(len(paths))):
            final, aside = finals[index], None
            if final.exists() or final.is_symlink():
                aside = folders[index] / f".replaced-{index}"
                os.replace(final, aside)
            done.append((final, aside))
            final.parent.mkdir(parents=True, exist_ok=True)
            move_into_place(paths[index], final)
    except BaseException:
        for final, aside in reversed(done):
            with contextlib.suppress(OSError):
                if aside is not None:
                    os.replace(aside, final)
                elif final.exists() and not final.is_dir():
                    final.unlink()
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """:func:`staged` for one file: yield a temporary path; move it onto ``path`` after.

    Args:
        path: The final output path.
        overwrite: Allow replacing an existing file.

    Yields:
        The temporary path to write to.
    """
    with staged([path], overwrite=overwrite) as (tmp,):
        yield tmp
