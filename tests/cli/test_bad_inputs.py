"""Every bad input is answered in one line on stderr with exit status 2, and nothing is left behind.

One test (at least) per class of bad input: malformed checkpoint fields; junk, empty and pickled
checkpoints; malformed Keras files; writes interrupted at the disk; output locations that cannot
be written; missing optional extras; errors inside DataLoader workers; non-finite numbers; and
warnings that would add lines to the answer. Each checks the exit status, the single line, the
absence of a traceback, that no file was created and that existing outputs are byte-identical.
"""

from __future__ import annotations

import copy
import errno
import json
import os
import re
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import main

SIZE = 32


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint, an image pair and a tiny LEVIR-style dataset, shared read-only."""
    root = tmp_path_factory.mktemp("inputs")
    save_checkpoint(root / "model.pt", DSIFN(encoder_weights=None), meta={"threshold": 0.3})
    rng = np.random.default_rng(0)
    for name in ("t1.png", "t2.png"):
        Image.fromarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / name)
    for split in ("train", "val", "test"):
        for sub in ("A", "B", "label"):
            (root / "levir" / split / sub).mkdir(parents=True)
        for i in range(2):
            for sub in ("A", "B"):
                image = rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8)
                Image.fromarray(image).save(root / "levir" / split / sub / f"{i}.png")
            label = (rng.random((SIZE, SIZE)) > 0.8).astype(np.uint8) * 255
            Image.fromarray(label).save(root / "levir" / split / "label" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def payload(files: Path) -> dict:
    return torch.load(files / "model.pt", weights_only=True)


def _snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder``, with the bytes of each file."""
    return {
        str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(folder.rglob("*"))
    }


_PROGRESS = re.compile(r"^[\w ./-]+: \d+ % \(")


def refused(capsys: pytest.CaptureFixture[str], argv: list[str], folder: Path) -> str:
    """Run ``dsifn ARGV``: exit 2, one line, no traceback, ``folder`` left exactly as it was."""
    before = _snapshot(folder)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would be a second line on stderr
            status = main(argv)
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    captured = capsys.readouterr()
    # Plain progress lines ("evaluate: 50 % (1/2 pairs)") come on a slow machine; not errors.
    lines = [line for line in captured.err.splitlines() if not _PROGRESS.match(line)]
    assert status == 2, captured.err
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err and "\x1b" not in captured.err
    assert lines[0].startswith(f"dsifn {argv[0]}: error: "), lines[0]
    assert _snapshot(folder) == before, "files were created, changed or removed"
    return lines[0]


def _predict(files: Path, out: Path, *extra: str, checkpoint: Path | None = None) -> list[str]:
    return [
        "predict",
        "--checkpoint",
        str(checkpoint or files / "model.pt"),
        "--before",
        str(files / "t1.png"),
        "--after",
        str(files / "t2.png"),
        "--out",
        str(out),
        "--quiet",
        "--device",
        "cpu",
        *extra,
    ]


def _evaluate(files: Path, checkpoint: Path | None = None, *extra: str) -> list[str]:
    argv = ["evaluate", "--checkpoint", str(checkpoint or files / "model.pt")]
    return [*argv, "--data", str(files / "levir"), "--device", "cpu", *extra]


# ----------------------------------------------------------------------------- 1. checkpoint fields


def _first_weight(p: dict) -> str:
    return next(k for k, v in p["state_dict"].items() if v.is_floating_point())


def _nan_weight(p: dict) -> None:
    p["state_dict"][_first_weight(p)].view(-1)[0] = float("nan")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda p: p.update(format_version="1"), "malformed format_version"),
        (lambda p: p.update(meta="threshold=0.3"), "'meta' is a str, not a mapping"),
        (lambda p: p.update(meta={"threshold": "0.3"}), "malformed decision threshold '0.3'"),
        (lambda p: p.update(meta={"threshold": float("nan")}), "malformed decision threshold"),
        (lambda p: p.update(meta={"threshold": 2}), "malformed decision threshold 2"),
        (lambda p: p["model_config"].update(in_channels="3"), "in_channels must be an integer"),
        (_nan_weight, "NaN or infinite"),
    ],
)
def test_malformed_checkpoint_fields(files, payload, tmp_path, capsys, edit, words):
    bad = copy.deepcopy(payload)
    edit(bad)
    checkpoint = tmp_path / "bad.pt"
    torch.save(bad, checkpoint)
    line = refused(capsys, _predict(files, tmp_path / "out.png", checkpoint=checkpoint), tmp_path)
    assert words in line and "bad.pt" in line


# ----------------------------------------------------------------------------- 2. not checkpoints


def test_junk_empty_and_pickled_checkpoints_are_named_in_our_words(files, tmp_path, capsys):
    (tmp_path / "empty.pt").touch()
    (tmp_path / "junk.pt").write_bytes(b"\x00\x01 certainly not a checkpoint " * 8)
    torch.save({"model": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")
    (tmp_path / "out").mkdir()
    expected = {
        "empty.pt": "it is empty",
        "junk.pt": "it is not a file written by torch.save",
        "pickled.pt": "it holds pickled Python objects (torch.nn.modules.linear.Linear)",
    }
    for name, words in expected.items():
        for argv in (
            _predict(files, tmp_path / "out" / "map.png", checkpoint=tmp_path / name),
            _evaluate(files, tmp_path / name),
            ["export", "--checkpoint", str(tmp_path / name), "-o", str(tmp_path / "m.onnx")],
        ):
            line = refused(capsys, argv, tmp_path)
            assert f"{name} is not a dsifn checkpoint: {words}" in line
            assert "weights_only" not in line and len(line) < 400
            assert "save_checkpoint" in line


def test_a_plain_pickle_warns_nothing_and_says_what_it_holds(tmp_path, capsys):
    # torch warns about the pickle protocol on its way to refusing this file.
    import pickle

    (tmp_path / "plain.pt").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=4))
    argv = ["export", "--checkpoint", str(tmp_path / "plain.pt"), "-o", str(tmp_path / "m.onnx")]
    assert "pickled Python objects" in refused(capsys, argv, tmp_path)


# ----------------------------------------------------------------------------- 3. Keras files


def _keras_file(path: Path, model_config: object, weight_names=(b"conv/kernel:0",)) -> Path:
    """An .h5 file shaped like a Keras model.save file, with a chosen graph and weight names."""
    with h5py.File(path, "w") as f:
        if isinstance(model_config, bytes):
            f.attrs["model_config"] = np.bytes_(model_config)
        else:
            f.attrs["model_config"] = json.dumps(model_config)
        layer = f.create_group("model_weights/conv")
        layer.attrs["weight_names"] = np.array(list(weight_names))
        layer["conv/kernel:0"] = np.zeros((3, 3, 3, 4), np.float32)
    return path


_GRAPH = {"class_name": "Functional", "config": {"layers": [], "input_layers": []}}


@pytest.mark.parametrize(
    ("graph", "weight_names", "words"),
    [
        ({**_GRAPH, "config": {"layers": ["conv2d", 3]}}, None, "layer 0 of the model graph"),
        (
            {**_GRAPH, "config": {"layers": [{"class_name": "Dense", "config": [1]}]}},
            None,
            "object",
        ),
        ({**_GRAPH, "config": {"layers": {"a": 1}}}, None, "no list of layers"),
        (b"\xff\xfe not utf-8", None, "model_config is not UTF-8"),
        (b"{'not': json}", None, "model_config is not JSON"),
        (_GRAPH, (b"conv/kernel:0", b"nowhere/bias:0"), "no such array"),
        (["a", "list"], None, "no Keras model graph"),
    ],
)
def test_malformed_keras_files(tmp_path, capsys, graph, weight_names, words):
    source = _keras_file(tmp_path / "best_model.h5", graph, weight_names or (b"conv/kernel:0",))
    argv = ["convert", "keras", str(source), "-o", str(tmp_path / "model.pt")]
    assert words in refused(capsys, argv, tmp_path)


def test_a_failed_convert_leaves_the_existing_checkpoint_as_it_was(tmp_path, capsys):
    out = tmp_path / "model.pt"
    out.write_bytes(b"an existing checkpoint")
    source = _keras_file(tmp_path / "best_model.h5", ["a", "list"])
    # Replacing was allowed, but the source is refused before anything is written...
    argv = ["convert", "keras", str(source), "-o", str(out), "--overwrite"]
    assert "no Keras model graph" in refused(capsys, argv, tmp_path)
    # ...and without --overwrite the output is refused before the source is read.
    argv = ["convert", "keras", str(tmp_path / "missing.h5"), "-o", str(out)]
    assert "model.pt exists; pass --overwrite" in refused(capsys, argv, tmp_path)


# ----------------------------------------------------------------------------- 4. atomic writes


def test_a_write_that_fails_at_the_disk_leaves_the_old_output(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text('{"f1": 0.5}\n')

    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # The output is synced before it is renamed into place: a full disk is found then.
    monkeypatch.setattr(os, "fsync", full_disk)
    line = refused(capsys, _evaluate(files, None, "--out", str(out), "--overwrite"), tmp_path)
    assert "No space left on device" in line


# ----------------------------------------------------------------------------- 5. output places


def test_outputs_under_a_file_or_onto_a_folder_are_refused_before_any_work(files, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    (folder / "inside.txt").write_text("kept")
    cases = [
        (_predict(files, blocker / "out.png"), "blocker is a file, not a folder"),
        (_predict(files, blocker / "deep" / "out.png"), "blocker is a file, not a folder"),
        (_evaluate(files, None, "--out", str(blocker / "eval")), "blocker is a file"),
        (_predict(files, folder), "folder.png is a folder, not a file"),
        (_predict(files, folder, "--overwrite"), "folder.png is a folder, not a file"),
        (
            ["export", "--checkpoint", str(files / "model.pt"), "-o", str(folder), "--overwrite"],
            "folder.png is a folder, not a file",
        ),
    ]
    for argv, words in cases:
        assert words in refused(capsys, argv, tmp_path)


def test_a_run_dir_under_a_file_is_refused_and_nothing_is_created(files, tmp_path, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    argv = ["train", "--data", str(files / "levir"), "--run-dir", str(blocker / "run")]
    argv += ["--no-progress", "model.encoder_weights=null", "run.device=cpu"]
    line = refused(capsys, argv, tmp_path)
    assert "blocker" in line


def test_a_folder_given_as_an_input_file_is_called_a_folder(files, tmp_path, capsys):
    folder = tmp_path / "weights.pt"
    folder.mkdir()
    line = refused(capsys, _predict(files, tmp_path / "o.png", checkpoint=folder), tmp_path)
    assert "weights.pt is a folder, not a" in line and "does not exist" not in line
    argv = ["convert", "keras", str(folder), "-o", str(tmp_path / "m.pt")]
    assert "is a folder, not a file" in refused(capsys, argv, tmp_path)


# ----------------------------------------------------------------------------- 6. optional extras


@pytest.mark.parametrize("module", ["onnx", "onnxruntime"])
def test_export_without_the_onnx_extra(files, tmp_path, capsys, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import MODULE` now raises ImportError
    argv = ["export", "--checkpoint", str(files / "model.pt"), "-o", str(tmp_path / "m.onnx")]
    line = refused(capsys, argv, tmp_path)
    assert f"needs the onnx extra ({module} is not installed)" in line
    assert "pip install 'dsifn[onnx]'" in line


def test_the_optional_import_helper(monkeypatch):
    from dsifn._optional import require
    from dsifn.errors import ConfigError

    assert require("json", "none", "reading JSON") is json
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"^ONNX checks needs the onnx extra"):
        require("onnxruntime", "onnx", "ONNX checks")


# ----------------------------------------------------------------------------- 7. worker errors


def test_a_data_loader_workers_error_is_the_same_line_as_without_workers(files, tmp_path, capsys):
    import shutil

    data = tmp_path / "levir"
    shutil.copytree(files / "levir", data)
    (data / "test" / "A" / "1.png").write_bytes(b"not an image")
    argv = ["evaluate", "--checkpoint", str(files / "model.pt"), "--data", str(data)]
    argv += ["--device", "cpu"]
    in_process = refused(capsys, [*argv, "--workers", "0"], tmp_path)
    in_worker = refused(capsys, [*argv, "--workers", "1"], tmp_path)
    assert in_worker == in_process
    assert "1.png" in in_worker and "DataLoader worker" not in in_worker
    assert "most recent call last" not in in_worker


def test_the_original_message_is_taken_from_a_reraised_traceback():
    from dsifn.cli.main import _one_line
    from dsifn.errors import DataError

    text = (
        "Caught DataError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "x.py", line 1, in read\n'
        "    raise OSError('gone')\n"
        "OSError: gone\n\n"
        "The above exception was the direct cause of the following exception:\n\n"
        "Traceback (most recent call last):\n"
        '  File "worker.py", line 9, in fetch\n'
        "    raise DataError(message)\n"
        "dsifn.errors.DataError: cannot read a.png: not an image\n"
    )
    assert _one_line(DataError(text)) == "cannot read a.png: not an image"
    assert _one_line(DataError("a.png: plain message")) == "a.png: plain message"


# ------------------------------------------------------------------------- 8. non-finite numbers


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--scale", "inf"], "argument --scale: 'inf' is not a finite number"),
        (["--threshold", "nan"], "argument --threshold: 'nan' is not a finite number"),
        (["--min-area=-inf"], "argument --min-area: '-inf' is not a finite number"),
        (["--scale", "ten"], "'ten' is not a number"),
    ],
)
def test_non_finite_float_options(files, tmp_path, capsys, extra, words):
    assert words in refused(capsys, _predict(files, tmp_path / "o.png", *extra), tmp_path)


def test_non_finite_numbers_elsewhere(files, tmp_path, capsys):
    data = str(files / "levir")
    cases = [
        (["demo", "--out", str(tmp_path / "demo"), "--minutes", "nan"], "not a finite number"),
        (_evaluate(files, None, "--threshold", "inf"), "not a finite number"),
        (["stats", "--data", data, "--scale", "nan"], "not a finite number"),
        (["train", "--data", data, "--run-dir", str(tmp_path / "r"), "optim.lr=.nan"], "optim.lr"),
        (["train", "--data", data, "--run-dir", str(tmp_path / "r"), "epochs=2", "lr=.inf"], "lr"),
        (
            [
                "train",
                "--data",
                data,
                "--run-dir",
                str(tmp_path / "r"),
                "loss.weights=[1,1,1,1,.nan]",
            ],
            "loss.weights must be a finite number",
        ),
    ]
    for argv, words in cases:
        assert words in refused(capsys, argv, tmp_path)
