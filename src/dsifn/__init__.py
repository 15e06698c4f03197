"""dsifn: the DSIFN change-detection network (Zhang et al., ISPRS J. P&RS 166, 2020).

Main entry points: :class:`DSIFN`, :class:`DSIFNConfig`, :class:`DeepSupervisionLoss`,
:func:`load_checkpoint`, :func:`save_checkpoint` and :func:`load_official_pytorch`; the
baselines (FC-EF, FC-Siam-conc, FC-Siam-diff, CDNet) by name: :data:`MODEL_NAMES`,
:func:`build_network`.
"""

from typing import Any

from dsifn._version import __version__
from dsifn.errors import DSIFNError, InputError
from dsifn.interop.official_pytorch import load_official_pytorch
from dsifn.losses import DeepSupervisionLoss
from dsifn.metrics import ConfusionMatrix, ThresholdSweep, scores_from_confusion
from dsifn.models import (
    DSIFN,
    MODEL_NAMES,
    DSIFNConfig,
    DSIFNOutput,
    Normalization,
    build_network,
)
from dsifn.models.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "DSIFN",
    "MODEL_NAMES",
    "ConfusionMatrix",
    "DSIFNConfig",
    "DSIFNError",
    "DSIFNOutput",
    "DeepSupervisionLoss",
    "InputError",
    "Normalization",
    "ThresholdSweep",
    "__version__",
    "build_network",
    "load_checkpoint",
    "load_official_pytorch",
    "predict_scene",
    "save_checkpoint",
    "scores_from_confusion",
]


def __getattr__(name: str) -> Any:
    # Scene inference pulls in rasterio and GDAL: import it on first use, not with dsifn.
    if name == "predict_scene":
        from dsifn.inference.scene import predict_scene

        return predict_scene
    raise AttributeError(f"module 'dsifn' has no attribute {name!r}")
