"""Writing files so that a crash never leaves a half-written output at the final path."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dsifn.errors import OutputExistsError

__all__ = ["atomic_path", "check_output_path"]


def check_output_path(path: str | os.PathLike[str], *, overwrite: bool) -> Path:
    """Refuse an existing output unless overwriting was asked for.

    Args:
        path: Where an output will be written.
        overwrite: Whether replacing an existing file is allowed.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        OutputExistsError: If ``path`` exists and ``overwrite`` is false.
    """
    out = Path(path)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} exists; pass --overwrite (overwrite=True) to replace it")
    return out


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` when the block succeeds.

    The temporary file is in the same folder (so the final rename is atomic) and is removed if
    the block raises, so an interrupted write never leaves a truncated file at ``path``.

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
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
