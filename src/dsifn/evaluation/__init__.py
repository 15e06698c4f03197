"""Evaluation: scores of a model on a dataset split, threshold tuning, pictures and a report."""

from dsifn.evaluation.report import ReportWriter, error_map
from dsifn.evaluation.results import EvaluationResult, ImageResult, Prediction, format_table
from dsifn.evaluation.scoring import (
    difference_scores,
    evaluate,
    resolve_threshold,
    tune_threshold,
)
from dsifn.evaluation.workflow import CheckpointEvaluation, evaluate_checkpoint, store_threshold

__all__ = [
    "CheckpointEvaluation",
    "EvaluationResult",
    "ImageResult",
    "Prediction",
    "ReportWriter",
    "difference_scores",
    "error_map",
    "evaluate",
    "evaluate_checkpoint",
    "format_table",
    "resolve_threshold",
    "store_threshold",
    "tune_threshold",
]
