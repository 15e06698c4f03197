"""Datasets of image pairs and change masks.

Readers for the layouts public change-detection datasets are distributed in (DSIFN-CD,
LEVIR-CD, WHU-CD, CDD, SYSU-CD, S2Looking, OSCD, list files) and for folders the user names; checks
of a dataset before training; per-band statistics for normalisation; seeded augmentation.
"""

from dsifn.data.checks import check_splits, compute_band_stats
from dsifn.data.config import AugmentConfig, DataConfig, Layout, reading_config
from dsifn.data.dataset import ChangeDetectionDataset, resolve_layout
from dsifn.data.layouts import OSCD_BANDS, DetectedLayout, Sample, SplitFiles, detect_layout

__all__ = [
    "OSCD_BANDS",
    "AugmentConfig",
    "ChangeDetectionDataset",
    "DataConfig",
    "DetectedLayout",
    "Layout",
    "Sample",
    "SplitFiles",
    "check_splits",
    "compute_band_stats",
    "detect_layout",
    "reading_config",
    "resolve_layout",
]
