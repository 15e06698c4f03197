"""Parity of the Keras .h5 converter against the authors' Keras architecture.

The authors' Keras model is rebuilt here in Keras 3 (torch backend, CPU) from the facts in the
spec: a frozen VGG16 sub-model shared by both dates, decoder stages of conv -> PReLU (one slope
per element) -> BatchNorm -> Dropout, CBAM attention with dense layers with biases, no BatchNorm
after stage 5's spatial attention, sigmoid outputs output_32 ... output_<size> coarse to fine.
It gets random weights (BatchNorm statistics and PReLU slopes too), is saved in the legacy
.h5 format, converted with h5py alone, and its five outputs compared with ours.
"""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # keras reads it at first import

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

keras = pytest.importorskip("keras")

from dsifn.cli.main import main  # noqa: E402
from dsifn.errors import WeightsError  # noqa: E402
from dsifn.interop.keras_h5 import load_keras_h5, plan_from_config, read_keras_h5  # noqa: E402
from dsifn.models.checkpoint import load_checkpoint  # noqa: E402
from dsifn.normalization import CAFFE_BGR  # noqa: E402

layers = keras.layers
ops = keras.ops

TAPS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")
WIDTHS = {4: (512, 512), 3: (512, 256, 256), 2: (256, 128, 128), 1: (128, 64, 64), 0: (64, 32, 16)}


def _channel_attention(x):
    channels = x.shape[-1]
    first = layers.Dense(channels // 8, activation="relu", kernel_initializer="he_normal")
    second = layers.Dense(channels, kernel_initializer="he_normal")
    avg = layers.Reshape((1, 1, channels))(layers.GlobalAveragePooling2D()(x))
    peak = layers.Reshape((1, 1, channels))(layers.GlobalMaxPooling2D()(x))
    weight = layers.Activation("sigmoid")(layers.Add()([second(first(avg)), second(first(peak))]))
    return layers.Multiply()([x, weight])


def _spatial_attention(x, order):
    pools = {
        "mean": layers.Lambda(lambda t: ops.mean(t, axis=3, keepdims=True)),
        "max": layers.Lambda(lambda t: ops.max(t, axis=3, keepdims=True)),
    }
    pooled = layers.Concatenate(axis=3)([pools[k](x) for k in order])
    attention = layers.Conv2D(1, 7, padding="same", activation="sigmoid", use_bias=False)(pooled)
    return layers.Multiply()([x, attention])


def build_authors_model(
    size, sa_order=("mean", "max"), concat_order=("up", "t1", "t2"), one_encoder_model=False
):
    """The Keras DSIFN as the spec describes the authors' file, at a small input size.

    Like the authors' file, the encoder is five frozen sub-models (input to each tap) sharing
    one VGG16's layers; ``one_encoder_model`` makes it a single sub-model with five outputs.
    """
    vgg = keras.applications.VGG16(weights=None, include_top=False, input_shape=(size, size, 3))
    t1, t2 = keras.Input((size, size, 3)), keras.Input((size, size, 3))
    if one_encoder_model:
        encoder = keras.Model(vgg.input, [vgg.get_layer(n).output for n in TAPS], name="taps")
        encoder.trainable = False
        f1, f2 = encoder(t1), encoder(t2)
    else:
        f1, f2 = [], []
        for tap in TAPS:
            encoder = keras.Model(vgg.input, vgg.get_layer(tap).output, name=f"vgg_{tap}")
            encoder.trainable = False
            f1.append(encoder(t1))
            f2.append(encoder(t2))
    outputs = []
    x = None
    for level in range(4, -1, -1):
        parts = {"t1": f1[level], "t2": f2[level]}
        if x is not None:
            parts["up"] = layers.Conv2DTranspose(x.shape[-1], 2, strides=2, padding="same")(x)
        x = layers.Concatenate()([parts[k] for k in concat_order if k in parts])
        if level < 4:
            x = _channel_attention(x)
        for width in WIDTHS[level]:
            x = layers.Conv2D(width, 3, padding="same")(x)
            x = layers.PReLU()(x)
            x = layers.BatchNormalization()(x)
            x = layers.Dropout(0.6)(x)
        x = _spatial_attention(x, sa_order)
        if level > 0:
            x = layers.BatchNormalization()(x)
        name = f"output_{size // 2**level}"
        outputs.append(layers.Conv2D(1, 1, activation="sigmoid", name=name)(x))
    return keras.Model([t1, t2], outputs)


def randomise(model, seed):
    """Random values for every weight, BatchNorm statistics and PReLU slopes included."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            randomise(layer, seed + 1)
            continue
        values = []
        for weight in layer.weights:
            shape, path = tuple(weight.shape), weight.path
            if "moving_variance" in path:
                values.append(rng.uniform(0.5, 2.0, shape))
            elif "gamma" in path:
                values.append(rng.uniform(0.5, 1.5, shape))
            elif "alpha" in path:
                values.append(rng.uniform(0.0, 0.5, shape))
            elif "kernel" in path:
                fan_in = int(np.prod(shape[:-1])) if "transpose" not in path else shape[-1] * 4
                values.append(rng.normal(0.0, np.sqrt(2.0 / fan_in), shape))
            else:  # biases, beta, moving mean
                values.append(rng.normal(0.0, 0.1, shape))
        layer.set_weights([v.astype("float32") for v in values])


def _save(model, path):
    model.save(str(path))
    return path


@pytest.fixture(scope="module")
def authors_h5(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build_authors_model(32)
    randomise(model, 0)
    return _save(model, tmp_path_factory.mktemp("keras") / "best_model.h5"), model


def _compare(path, keras_model, size, seed=0):
    rng = np.random.default_rng(seed)
    t1 = rng.normal(0.0, 1.0, (2, size, size, 3)).astype("float32")
    t2 = rng.normal(0.0, 1.0, (2, size, size, 3)).astype("float32")
    expected = [np.asarray(ops.convert_to_numpy(o)) for o in keras_model([t1, t2], training=False)]
    model = load_keras_h5(path)
    with torch.no_grad():
        out = model(
            torch.from_numpy(t1).permute(0, 3, 1, 2), torch.from_numpy(t2).permute(0, 3, 1, 2)
        )
    ours = [torch.sigmoid(o).permute(0, 2, 3, 1).numpy() for o in reversed(out)]  # coarse first
    for exp, got in zip(expected, ours, strict=True):
        assert exp.shape == got.shape
        assert exp.std() > 0.01  # the maps vary: not a comparison of constants
        np.testing.assert_allclose(got, exp, atol=1e-4, rtol=0)
    return model


def test_converted_model_matches_keras_outputs(authors_h5):
    path, keras_model = authors_h5
    model = _compare(path, keras_model, 32)
    cfg = model.config
    assert (cfg.variant, cfg.input_size, cfg.in_channels) == ("keras", 32, 3)
    assert cfg.input_normalization == CAFFE_BGR
    assert model.checkpoint_meta["tile_size"] == 32
    assert model.checkpoint_meta["preprocessing"] == "caffe"
    assert model.checkpoint_meta["keras_outputs"] == [f"output_{s}" for s in (2, 4, 8, 16, 32)]


def test_orders_are_read_from_the_graph(tmp_path):
    # Swapped spatial-attention pooling and a different concatenation order must still match.
    keras.utils.set_random_seed(1)
    model = build_authors_model(
        32, sa_order=("max", "mean"), concat_order=("t2", "up", "t1"), one_encoder_model=True
    )
    randomise(model, 1)
    path = _save(model, tmp_path / "swapped.h5")
    config, _, _ = read_keras_h5(path)
    plan = plan_from_config(config)
    assert {s.spatial_order for s in plan.stages} == {("max", "mean")}
    assert plan.stages[1].concat_order == ("t2", "up", "t1")
    _compare(path, model, 32, seed=1)


def test_weight_names_of_keras2_files_are_read(authors_h5, tmp_path):
    # Keras 2.2.4 writes "conv2d_1/kernel:0" and class "Model": rewrite a Keras 3 file so.
    path, keras_model = authors_h5
    copy = tmp_path / "keras2.h5"
    copy.write_bytes(Path(path).read_bytes())
    with h5py.File(copy, "r+") as f:
        import json

        config = json.loads(f.attrs["model_config"])
        config["class_name"] = "Model"
        for layer in config["config"]["layers"]:
            nodes = []
            for node in layer["inbound_nodes"]:
                refs = []
                _collect(node["args"], refs)
                nodes.append([[n, i, t, {}] for n, i, t in refs])
            layer["inbound_nodes"] = nodes
            if layer["class_name"] == "Functional":
                layer["class_name"] = "Model"
        f.attrs["model_config"] = json.dumps(config)
        for group in f["model_weights"].values():
            names = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            renamed = []
            for n in names:
                group.move(n, n + ":0")
                renamed.append(n + ":0")
            if names:
                group.attrs["weight_names"] = np.array([r.encode() for r in renamed])
    _compare(copy, keras_model, 32)


def _collect(value, refs):
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            refs.append(tuple(value["config"]["keras_history"]))
        else:
            for v in value.values():
                _collect(v, refs)
    elif isinstance(value, list):
        for v in value:
            _collect(v, refs)


def test_other_files_are_refused_clearly(tmp_path):
    inp = keras.Input((16, 16, 3))
    other = keras.Model(inp, layers.Conv2D(2, 3)(inp))
    other_path = _save(other, tmp_path / "other.h5")
    weights_only = tmp_path / "only.weights.h5"
    other.save_weights(str(weights_only))
    random = tmp_path / "random.h5"
    with h5py.File(random, "w") as f:
        f["x"] = np.zeros(3)
    text = tmp_path / "text.h5"
    text.write_text("not hdf5")
    for path, words in [
        (other_path, "two images"),
        (weights_only, "model_config"),
        (random, "model_config"),
        (text, "not an HDF5 file"),
    ]:
        with pytest.raises(WeightsError, match=words):
            load_keras_h5(path)


def test_cli_convert_writes_a_checkpoint_and_refuses_to_overwrite(authors_h5, tmp_path, capsys):
    path, _ = authors_h5
    out = tmp_path / "model.pt"
    assert main(["convert", "keras", str(path), "-o", str(out)]) == 0
    model = load_checkpoint(out)
    assert model.config.variant == "keras"
    assert model.checkpoint_meta["source"] == "best_model.h5"
    assert model.checkpoint_meta["tile_size"] == 32
    before = out.read_bytes()
    assert main(["convert", "keras", str(path), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(["convert", "keras", str(path), "-o", str(out), "--overwrite"]) == 0

    assert (
        main(["convert", "keras", str(tmp_path / "missing.h5"), "-o", str(tmp_path / "m.pt")]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert not (tmp_path / "m.pt").exists()


def test_tap_models_must_share_the_encoder_weights(authors_h5, tmp_path):
    path, _ = authors_h5
    copy = tmp_path / "edited.h5"
    copy.write_bytes(Path(path).read_bytes())
    with h5py.File(copy, "r+") as f:
        kernel = f["model_weights/vgg_block2_conv2/block1_conv1/kernel"]
        kernel[...] = kernel[...] + 1.0
    with pytest.raises(WeightsError, match="different VGG16 weights"):
        load_keras_h5(copy)


def _edited(authors_h5, tmp_path, edit):
    """A copy of the authors' file with ``edit(h5py_file, model_config)`` applied."""
    copy = tmp_path / "edited.h5"
    copy.write_bytes(Path(authors_h5[0]).read_bytes())
    with h5py.File(copy, "r+") as f:
        import json

        config = json.loads(f.attrs["model_config"])
        if edit(f, config) is not False:
            f.attrs["model_config"] = json.dumps(config)
    return copy


def _set_layer_entry(index, value):
    def edit(f, config):
        config["config"]["layers"][index] = value

    return edit


def _text_input_size(f, config):
    first = next(lay for lay in config["config"]["layers"] if lay["class_name"] == "InputLayer")
    shape = first["config"].get("batch_shape") or first["config"]["batch_input_shape"]
    first["config"]["batch_shape"] = [None, "32", "32", 3]
    for other in config["config"]["layers"]:
        if other["class_name"] == "InputLayer":
            other["config"]["batch_shape"] = [None, "32", "32", shape[-1]]


def _set_epsilon(f, config):
    norm = next(
        lay for lay in config["config"]["layers"] if lay["class_name"] == "BatchNormalization"
    )
    norm["config"]["epsilon"] = "small"


def _raw_config(value):
    def edit(f, config):
        f.attrs["model_config"] = value
        return False

    return edit


def _dangling_weight_name(f, config):
    group = next(g for g in f["model_weights"].values() if len(g.attrs["weight_names"]))
    group.attrs["weight_names"] = np.array([b"nowhere/kernel:0"])
    return False


def _nan_weight(f, config):
    group = next(
        g
        for name, g in f["model_weights"].items()
        if name.startswith("conv2d") and len(g.attrs["weight_names"])
    )
    kernel = group[group.attrs["weight_names"][0]]
    kernel[(0,) * kernel.ndim] = np.nan
    return False


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (_set_layer_entry(3, "conv2d"), "layer 3 of the model graph is not an object"),
        (_set_layer_entry(0, {"class_name": "InputLayer", "config": [1]}), "not an object"),
        (_text_input_size, "malformed"),
        (_set_epsilon, "malformed"),
        (_raw_config(np.bytes_(b"\xff\xfe{not utf-8")), "not UTF-8"),
        (_raw_config(np.void(b"\xff\xfe{opaque, not utf-8")), "not UTF-8"),
        (_raw_config(np.bytes_(b"{not json")), "not JSON"),
        (_dangling_weight_name, "no such array"),
        (_nan_weight, "NaN or infinite"),
    ],
)
def test_malformed_files_are_refused_in_one_line(authors_h5, tmp_path, capsys, edit, words):
    bad = _edited(authors_h5, tmp_path, edit)
    with pytest.raises(WeightsError, match=words):
        load_keras_h5(bad)
    out = tmp_path / "m.pt"
    assert main(["convert", "keras", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words.split()[0] in err and "Traceback" not in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edited.h5"]  # no partial file


def test_a_folder_given_as_the_keras_file_is_named_a_folder(tmp_path):
    with pytest.raises(WeightsError, match="is a folder, not a file"):
        load_keras_h5(tmp_path)
