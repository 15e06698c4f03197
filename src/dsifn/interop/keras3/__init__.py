"""DSIFN as a Keras 3 model, for any Keras backend (extra ``keras``: ``pip install dsifn[keras]``).

This is the only place dsifn imports Keras; ``import dsifn`` never needs it, and without Keras
importing this package fails with one line naming the extra to install. Keras picks its
backend from ``KERAS_BACKEND`` at its first import; when neither that variable nor a Keras
configuration file names one and TensorFlow is absent, the torch backend is chosen here.

The model is channels-last like Keras: inputs ``t1``, ``t2`` of shape (B, H, W, C), normalised
as the PyTorch model's (``config.input_normalization``); outputs five logit maps, finest first,
(B, H/s, W/s, 1) for s = 1, 2, 4, 8, 16 (names ``stride1`` ... ``stride16``). The ``"pytorch"``
variant takes any H, W that are multiples of 16 (it does not pad, unlike the PyTorch model);
the ``"keras"`` variant takes its fixed ``input_size`` only.
"""

from dsifn._optional import require
from dsifn.interop.keras3._backend import choose_backend

choose_backend()  # Keras reads its backend at first import, which the next line does
require("keras", "keras", "the Keras 3 model (dsifn.interop.keras3)")

from dsifn.interop.keras3.model import (  # noqa: E402
    build_keras_model,
    keras_model_from_checkpoint,
    transfer_weights,
)

__all__ = ["build_keras_model", "keras_model_from_checkpoint", "transfer_weights"]
