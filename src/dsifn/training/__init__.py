"""Training and evaluation: configs, the training engine, split-level evaluation, reports."""

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
from dsifn.training.evaluate import (
    EvaluationResult,
    difference_scores,
    evaluate,
    evaluate_checkpoint,
    store_threshold,
    tune_threshold,
)
from dsifn.training.report import ReportWriter, error_map

__all__ = [
    "BUNDLED_CONFIGS",
    "EvaluationResult",
    "LossConfig",
    "OptimConfig",
    "ReportWriter",
    "RunConfig",
    "ScheduleConfig",
    "TrainConfig",
    "TrainResult",
    "ValidationConfig",
    "difference_scores",
    "error_map",
    "evaluate",
    "evaluate_checkpoint",
    "load_config",
    "store_threshold",
    "train",
    "tune_threshold",
]
