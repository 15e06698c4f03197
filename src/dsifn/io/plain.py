"""Reading ``torch.save`` files of plain values only, refusing any other file in dsifn's words.

dsifn's checkpoints and the weight files it reads (torchvision's VGG16, the authors' PyTorch
state dict) hold tensors, numbers, text, lists and dictionaries, nothing else, so they load with
``torch.load(weights_only=True)``. This module knows nothing of models, so the model modules
can use it without importing the checkpoint format that builds them.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from dsifn.errors import CheckpointError

__all__ = ["MAKE_CHECKPOINT", "load_plain"]

# How a good checkpoint is made, for the messages that refuse a file.
MAKE_CHECKPOINT = "write one with dsifn.save_checkpoint(path, model), dsifn train or dsifn convert"


def load_plain(path: str | os.PathLike[str]) -> Any:
    """``torch.load`` a file with ``weights_only=True``, refusing it in dsifn's words.

    Torch's own refusal runs to a thousand characters and advises ``weights_only=False``,
    which for a file of pickled objects is exactly the unsafe step; dsifn never takes it.

    Args:
        path: A file written by ``torch.save``.

    Returns:
        What the file holds (tensors, numbers, text, lists and dictionaries only).

    Raises:
        CheckpointError: Saying what the file is not and how to write a good one.
    """
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError as exc:
        raise CheckpointError(f"{file} cannot be read: {exc.strerror or exc}") from exc
    if size == 0:
        raise CheckpointError(
            f"{file} is not a dsifn checkpoint: it is empty (0 bytes, perhaps an interrupted "
            f"copy); {MAKE_CHECKPOINT}"
        )
    try:
        with warnings.catch_warnings():
            # Torch warns about pickle protocols on its way to refusing a file; the refusal
            # below says what matters.
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except PermissionError as exc:
        raise CheckpointError(f"{file} cannot be read: permission denied") from exc
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if found is None and not _head(file).startswith(b"\x80"):  # no pickle protocol mark
            raise CheckpointError(
                f"{file} is not a dsifn checkpoint: it is not a file written by torch.save; "
                f"{MAKE_CHECKPOINT}"
            ) from exc
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{file} is not a dsifn checkpoint: it holds pickled Python objects{what}, which "
            "dsifn never loads (loading them can run any code); where it was made, save "
            "model.state_dict() instead of objects, or write the DSIFN with "
            "dsifn.save_checkpoint(path, model)"
        ) from exc
    except Exception as exc:  # zip, pickle-stream and torch format errors alike
        why = (
            "it is a damaged or truncated torch.save file"
            if _head(file).startswith(b"PK\x03\x04")  # torch.save writes a zip archive
            else "it is not a file written by torch.save"
        )
        raise CheckpointError(
            f"{file} is not a dsifn checkpoint: {why}; {MAKE_CHECKPOINT}"
        ) from exc


def _head(file: Path) -> bytes:
    with file.open("rb") as handle:
        return handle.read(4)
