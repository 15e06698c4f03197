"""Convert the authors' released Keras ``.h5`` model into a dsifn checkpoint, with h5py alone.

The only trained DSIFN weights the authors published are a Keras 2.2.4 ``model.save`` file:
an HDF5 file whose attribute ``model_config`` is the JSON graph of a functional model and whose
group ``model_weights/<layer>/`` holds each layer's arrays (listed in order by the attribute
``weight_names``). The VGG16 encoder sits in nested sub-models applied to both dates: in the
authors' file five of them (input to block5_conv3, to block4_conv3, ...) sharing VGG16's layers.

Layers are identified by their place in the graph, never by their auto-generated names
(``conv2d_17`` in one Keras run is ``conv2d_5`` in another):

* the nested models fed by the inputs hold the encoder; the convolutions in graph order are
  VGG16's, and each output is a tap before a max-pool (level = pools passed); the model with
  all 13 convolutions gives the weights, the others must hold the same arrays;
* a concatenation that takes both dates' encoder features at one level starts a decoder stage;
  its input order (decoder state, T1, T2 in any order) is read and the channels permuted;
* every other layer belongs to the stage of its latest stage concatenation: the dense pair of
  the channel attention, 3x3 conv -> PReLU -> BatchNorm blocks, the 7x7 spatial-attention conv
  (whose [mean, max] input order is read from the pooling layers), the BatchNorm after it,
  the 1x1 side head (and the model output it feeds) and the transposed convolution that
  upsamples for the next stage.

Keras 3's legacy ``.h5`` files (``Functional``, ``keras_history`` tensors, weight names without
``:0``) are read as well. The modules, in the order a file goes through them:

* :mod:`~dsifn.interop.keras_h5.graph`: the JSON graph as layers and tensors;
* :mod:`~dsifn.interop.keras_h5.plan`: which layers are which part of DSIFN
  (:func:`plan_from_config`, pure);
* :mod:`~dsifn.interop.keras_h5.weights`: the arrays as a dsifn state dict
  (:func:`convert_weights`, pure);
* :mod:`~dsifn.interop.keras_h5.files`: the file reading (:func:`read_keras_h5`) and the
  functions that build a model or write a checkpoint.
"""

from dsifn.interop.keras_h5.files import convert_keras_h5, load_keras_h5, read_keras_h5
from dsifn.interop.keras_h5.plan import KerasPlan, plan_from_config
from dsifn.interop.keras_h5.weights import KerasLayerWeights, convert_weights

__all__ = [
    "KerasLayerWeights",
    "KerasPlan",
    "convert_keras_h5",
    "convert_weights",
    "load_keras_h5",
    "plan_from_config",
    "read_keras_h5",
]
