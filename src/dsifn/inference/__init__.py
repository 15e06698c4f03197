"""Prediction on image pairs and whole scenes: runners, tiling, georeferenced outputs."""

from dsifn.inference.folders import FolderResult, predict_folders
from dsifn.inference.loading import load_runner
from dsifn.inference.runner import TileRunner, TorchRunner
from dsifn.inference.scene import SceneOptions, SceneResult, predict_scene

__all__ = [
    "FolderResult",
    "SceneOptions",
    "SceneResult",
    "TileRunner",
    "TorchRunner",
    "load_runner",
    "predict_folders",
    "predict_scene",
]
