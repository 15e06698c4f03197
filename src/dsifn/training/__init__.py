"""Training: configurations, the training step and the engine that runs it."""

from dsifn.training.config import (
    BUNDLED_CONFIGS,
    LossConfig,
    OptimConfig,
    RunConfig,
    ScheduleConfig,
    TrainConfig,
    ValidationConfig,
    load_config,
)
from dsifn.training.engine import TrainResult, train

__all__ = [
    "BUNDLED_CONFIGS",
    "LossConfig",
    "OptimConfig",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainResult",
    "ValidationConfig",
    "load_config",
    "train",
]
