"""dsifn: the DSIFN change-detection network (Zhang et al., ISPRS J. P&RS 166, 2020).

Main entry points: :class:`DSIFN`, :class:`DSIFNConfig`, :class:`DeepSupervisionLoss`,
:func:`load_checkpoint`, :func:`save_checkpoint` and :func:`load_official_pytorch`.
"""

from dsifn._version import __version__
from dsifn.errors import DSIFNError, InputError
from dsifn.io.checkpoint import load_checkpoint, save_checkpoint
from dsifn.models import DSIFN, DSIFNConfig, DSIFNOutput, Normalization

__all__ = [
    "DSIFN",
    "DSIFNConfig",
    "DSIFNError",
    "DSIFNOutput",
    "InputError",
    "Normalization",
    "__version__",
    "load_checkpoint",
    "save_checkpoint",
]
