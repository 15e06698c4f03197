"""The package's own exceptions.

Every error a user can cause (bad input, a file that is not what it claims to be, missing
weights) is raised as a subclass of :class:`DSIFNError`. The command-line interface turns these
into one line on standard error and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DSIFNError",
    "DataError",
    "InputError",
    "OutputExistsError",
    "WeightsError",
]


class DSIFNError(Exception):
    """Base class of every error raised on purpose by ``dsifn``."""


class InputError(DSIFNError, ValueError):
    """A tensor, array or raster does not have the shape, dtype or band count expected."""


class ConfigError(DSIFNError, ValueError):
    """An option has a value outside its allowed set or range."""


class DataError(DSIFNError, ValueError):
    """A dataset on disk is incomplete, inconsistent or unreadable."""


class WeightsError(DSIFNError):
    """Pretrained weights are missing, corrupted or do not fit the network."""


class CheckpointError(DSIFNError):
    """A file is not a dsifn checkpoint, or its weights do not fit its configuration."""


class OutputExistsError(DSIFNError, FileExistsError):
    """An output path exists and overwriting was not allowed."""
