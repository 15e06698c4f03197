"""``dsifn train`` refuses bad input in one line, exit 2, before the run directory exists.

Each refusal here used to come after ``run/config.yaml`` was written, so the retry was blocked by
"run directory is not empty". The datasets are tiny LEVIR-style folders made in fixtures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dsifn import load_checkpoint
from dsifn.cli.main import main
from fixtures.datasets import write_levir
from fixtures.training import TINY

TRAIN_ARGS = [
    *TINY,
    "epochs=1",
]


@pytest.fixture(scope="module")
def levir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_levir(tmp_path_factory.mktemp("levir"), counts=(2, 1, 1))


@pytest.fixture(scope="module")
def empty_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_levir(tmp_path_factory.mktemp("empty"), counts=(0, 1, 1))


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("dsifn train: error:")
    assert "Traceback" not in captured.err
    return lines[0]


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["model.in_channels=4"], "the data has 3 bands but model.in_channels is 4"),
        (["data.bands=[1,2]"], "the data has 2 bands"),
        (["run.precision=fp16"], "fp16' needs a CUDA device"),
    ],
)
def test_set_up_errors_leave_no_run_directory(tmp_path, levir, capsys, extra, match):
    run = tmp_path / "run"
    argv = ["train", "--data", str(levir), "--run-dir", str(run), "--no-progress", *TRAIN_ARGS]
    line = _refused(capsys, [*argv, *extra])
    assert match in line
    assert not run.exists()


def test_empty_train_split_leaves_no_run_directory(tmp_path, empty_train, capsys):
    run = tmp_path / "run"
    argv = [
        "train",
        "--data",
        str(empty_train),
        "--run-dir",
        str(run),
        "--no-progress",
        *TRAIN_ARGS,
    ]
    assert "holds no image pairs" in _refused(capsys, argv)
    assert not run.exists()


def test_scheduler_refusal_comes_before_the_run_directory(tmp_path, levir, capsys, monkeypatch):
    # torch's own value checks (here a stand-in refusal) are run while checking, not later.
    def refuse(*args, **kwargs):
        raise ValueError("Invalid value")

    monkeypatch.setattr(torch.optim.lr_scheduler, "ReduceLROnPlateau", refuse)
    run = tmp_path / "run"
    argv = ["train", "--data", str(levir), "--run-dir", str(run), "--no-progress", *TRAIN_ARGS]
    assert "schedule settings are refused: Invalid value" in _refused(capsys, argv)
    assert not run.exists()


def test_a_file_where_the_run_directory_goes_is_refused(tmp_path, levir, capsys):
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    for run in (blocker, blocker / "run"):
        argv = ["train", "--data", str(levir), "--run-dir", str(run), "--no-progress", *TRAIN_ARGS]
        assert "is a file" in _refused(capsys, argv)
        assert blocker.read_text() == "keep me"


def test_resume_with_a_contradicting_model_keeps_the_run_config(tmp_path, levir, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(levir), "--run-dir", str(run), "--no-progress", *TRAIN_ARGS]
    assert main(argv) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    resume = ["train", "--run-dir", str(run), "--resume", "--no-progress"]
    line = _refused(capsys, [*resume, "model.shared_encoder=false"])
    assert "last.pt" in line
    # config.yaml still holds the run's own model, so a plain --resume still works.
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_validation_without_labelled_pixels_names_an_unscored_best(tmp_path, levir, capsys):
    root = tmp_path / "unlabelled"
    write_levir(root, counts=(2, 1, 1))
    for label in (root / "val" / "label").iterdir():  # every pixel "not labelled"
        shape = np.asarray(Image.open(label)).shape
        Image.fromarray(np.full(shape, 7, dtype=np.uint8)).save(label)
    run = tmp_path / "run"
    argv = ["train", "--data", str(root), "--run-dir", str(run), "--no-progress", *TRAIN_ARGS]
    assert main([*argv, "data.ignore_value=7"]) == 0
    out = capsys.readouterr().out
    assert "no validation round gave a finite F1" in out
    assert "(unscored: the last round's model)" in out
    model = load_checkpoint(run / "best.pt")
    assert model.checkpoint_meta["best_scored"] is False


def test_a_folder_given_as_encoder_weights_is_named_a_folder(tmp_path, levir, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(levir), "--run-dir", str(run), "--no-progress", *TRAIN_ARGS[1:]]
    line = _refused(capsys, [*argv, f"model.encoder_weights={tmp_path}"])
    assert f"encoder weights file {tmp_path} is a folder, not a file" in line
    assert not run.exists()
