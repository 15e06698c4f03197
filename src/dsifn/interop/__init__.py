"""Foreign formats: the authors' PyTorch and Keras weights, Keras 3, ONNX and OpenVINO.

The ONNX, OpenVINO and Keras 3 parts need the optional extras (``dsifn[onnx]``,
``dsifn[openvino]``, ``dsifn[keras]``) and are imported from their modules:
:mod:`dsifn.interop.onnx`, :mod:`dsifn.interop.openvino` (with int8 quantisation in
:mod:`dsifn.interop.quantize`), :mod:`dsifn.interop.keras3`.
"""

from dsifn.interop.keras_h5 import convert_keras_h5, load_keras_h5
from dsifn.interop.official_pytorch import load_official_pytorch, official_to_dsifn

__all__ = ["convert_keras_h5", "load_keras_h5", "load_official_pytorch", "official_to_dsifn"]
