"""dsifn.interop.keras_h5.graph: what a layer of a Keras graph does, read from its config."""

from __future__ import annotations

import base64
import marshal

from dsifn.interop.keras_h5.graph import Layer, pool_kind


def test_channel_pooling_kind_is_read_from_lambda_code_and_op_names():
    def lambda_layer(function):
        # Keras 2.2.4 stores [base64 marshalled code, defaults, closure].
        code = base64.b64encode(marshal.dumps(function.__code__)).decode()
        config = {"name": "lambda_1", "function": [code, None, None], "module": "attention"}
        return Layer("lambda_1", "Lambda", config, [])

    assert pool_kind(lambda_layer(lambda x: K.mean(x, axis=3, keepdims=True))) == "mean"  # noqa: F821
    assert pool_kind(lambda_layer(lambda x: K.max(x, axis=3, keepdims=True))) == "max"  # noqa: F821
    op = Layer("tf_op", "TFOpLambda", {"function": "math.reduce_max"}, [])
    assert pool_kind(op) == "max"
    assert pool_kind(Layer("other", "Lambda", {"function": "x + 1"}, [])) is None
