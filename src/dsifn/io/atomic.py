"""Paths checked before any work, and files written so that a crash never leaves a bad output.

An output is checked up front (:func:`check_output_path`, :func:`check_output_folder`): an
existing file is kept unless overwriting was asked for, and a path that cannot be written at
all (a folder where a file goes, a file where a folder must be) is refused whatever the
overwrite flag says, so a long run never fails at its last step. :func:`atomic_path` then
writes beside the final path and renames, after syncing the data to disk, so that neither an
exception nor a power loss leaves a truncated or empty file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dsifn.errors import ConfigError, DSIFNError, OutputExistsError

__all__ = [
    "atomic_path",
    "check_input_file",
    "check_output_folder",
    "check_output_path",
    "move_into_place",
]


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


def move_into_place(tmp: Path, final: Path) -> None:
    """Rename a complete file onto its final path, durably.

    The file's data is synced before the rename and the folder's entry after it, so a power
    loss leaves the old file or the new one whole, never an empty one.
    """
    _fsync(tmp)
    os.replace(tmp, final)
    _fsync(final.parent, folder=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    The temporary file is in the same folder (so the final rename is atomic) and is removed if
    the block raises, so an interrupted write never leaves a truncated file at ``path``. Before
    the rename the file's data is synced to disk, and after it the folder's entry, so a power
    loss leaves either the old file or the complete new one, never an empty one.

    Args:
        path: The final output path.
        overwrite: Allow replacing an existing file.

    Yields:
        The temporary path to write to.
    """
    final = check_output_path(path, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    # mkstemp makes the file private (0600); give it the mode a plain open() would have.
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o666 & ~umask)
    try:
        yield tmp
        if not overwrite and final.exists():
            raise OutputExistsError(f"{final} appeared while writing; not replaced")
        move_into_place(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
