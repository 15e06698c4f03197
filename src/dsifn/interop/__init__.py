"""Foreign formats: the authors' PyTorch and Keras weights, Keras 3 and ONNX."""
