"""``dsifn train`` end to end on a tiny generated LEVIR-style folder."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from dsifn import load_checkpoint
from dsifn.cli.main import main
from dsifn.contract import InputContract
from dsifn.training.config import load_config
from fixtures.datasets import write_levir
from fixtures.training import TINY

TRAIN_ARGS = [
    *TINY,
    "epochs=1",
]


@pytest.fixture(scope="module")
def levir(tmp_path_factory):
    return write_levir(tmp_path_factory.mktemp("levir"), counts=(2, 1, 1))


def _train(levir, run, *extra):
    return main(["train", "--data", str(levir), "--run-dir", str(run), "--no-progress", *extra])


@pytest.mark.slow
def test_train_writes_a_complete_run_and_refuses_to_reuse_it(tmp_path, levir, capsys):
    run = tmp_path / "run"
    assert _train(levir, run, "--config", "levir", *TRAIN_ARGS) == 0
    out = capsys.readouterr().out
    assert "LEVIR" in out.splitlines()[0]  # the detected layout, said first
    assert "best validation F1" in out

    model = load_checkpoint(run / "best.pt")
    assert InputContract.of(model).threshold == 0.5
    load_checkpoint(run / "last.pt")
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1]
    with Image.open(run / "curves.png") as png:
        assert png.format == "PNG"
    resolved = load_config(run / "config.yaml")
    assert resolved.data.root == str(levir)
    assert resolved.data.layout == "levir"  # from the bundled config
    assert resolved.schedule.epochs == 1
    assert resolved.model.encoder_weights is None

    before = (run / "last.pt").stat().st_mtime_ns
    assert _train(levir, run, *TRAIN_ARGS) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "not empty" in err and "--overwrite" in err
    assert (run / "last.pt").stat().st_mtime_ns == before

    # A finished run resumes to nothing new; its config comes from the run directory and
    # overrides given on resuming are recorded.
    assert main(["train", "--run-dir", str(run), "--resume", "--no-progress", "seed=3"]) == 0
    assert (run / "last.pt").stat().st_mtime_ns == before
    assert load_config(run / "config.yaml").run.seed == 3


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["epochs=two"], "schedule.epochs must be an integer"),
        (["learning-rate"], "not key=value"),
        (["--config", "nonexistent"], "neither a file nor a bundled config"),
        (["--data", "/nonexistent/dsifn"], "not found"),
        (["--resume"], "nothing to resume"),
    ],
)
def test_user_errors_give_one_line_and_exit_2(tmp_path, levir, capsys, args, match):
    argv = ["train", "--run-dir", str(tmp_path / "run"), "--no-progress"]
    if "--data" not in args:
        argv += ["--data", str(levir)]
    assert main([*argv, *TRAIN_ARGS[:-1], *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("dsifn train: error:")
    assert match in lines[0]
    # A run that fails before training leaves nothing behind that would block the retry.
    assert not (tmp_path / "run").exists()


def test_missing_encoder_weights_are_reported_before_the_run_directory_is_made(
    tmp_path, levir, capsys, monkeypatch
):
    import urllib.error

    import torch

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    argv = [*TRAIN_ARGS[1:], "model.encoder_weights=imagenet"]
    assert _train(levir, tmp_path / "run", *argv) == 2
    err = capsys.readouterr().err
    assert "vgg16-397923af.pth" in err and str(tmp_path / "hub") in err
    assert not (tmp_path / "run").exists()
