"""Keras backend choice, made before Keras is first imported."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path


def choose_backend() -> None:
    """Use the torch backend when Keras would pick TensorFlow and TensorFlow is absent."""
    if "keras" in sys.modules or "KERAS_BACKEND" in os.environ:
        return
    if importlib.util.find_spec("tensorflow") is not None:
        return
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        configured = json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError, AttributeError):
        configured = "tensorflow"  # Keras's default, also written to keras.json on first use
    if configured == "tensorflow":
        os.environ["KERAS_BACKEND"] = "torch"  # torch is always installed with dsifn
