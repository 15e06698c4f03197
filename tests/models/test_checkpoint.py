from pathlib import Path

import pytest
import torch

import dsifn
from dsifn import DSIFN, load_checkpoint, save_checkpoint
from dsifn.errors import CheckpointError, OutputExistsError
from dsifn.io.atomic import atomic_path
from dsifn.models.checkpoint import read_checkpoint


def test_round_trip_rebuilds_the_model_alone(tmp_path: Path) -> None:
    model = DSIFN(in_channels=4, shared_encoder=False, dropout=0.2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_checkpoint(tmp_path / "m.pt", model, meta={"threshold": 0.4})
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    meta = dict(loaded.checkpoint_meta)
    contract = meta.pop("input_contract")  # every checkpoint records how its input is made
    assert meta == {}  # the threshold given the 0.2 way lives in the contract, once
    assert contract["band_count"] == 4 and contract["threshold"] == 0.4
    assert contract["scaling"]["rule"] == "dtype"
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    a, b = torch.rand(1, 4, 32, 32), torch.rand(1, 4, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(a, b).stride1, loaded(a, b).stride1)
    payload = torch.load(path, weights_only=True)
    assert payload["dsifn_version"] == dsifn.__version__


def test_loading_never_fetches_encoder_weights(tmp_path: Path) -> None:
    model = DSIFN()
    # Record a weights file that no longer exists: loading must use the checkpoint's weights.
    model.config = model.config.__class__(encoder_weights=str(tmp_path / "gone.pth"))
    path = save_checkpoint(tmp_path / "m.pt", model)
    assert load_checkpoint(path).config.encoder_weights == str(tmp_path / "gone.pth")


def test_refuses_to_overwrite_without_permission(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", DSIFN())
    with pytest.raises(OutputExistsError, match="overwrite=True"):
        save_checkpoint(path, DSIFN())
    save_checkpoint(path, DSIFN(), overwrite=True)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match=r"not a file written by torch\.save"):
        load_checkpoint(text)
    plain = tmp_path / "state.pt"
    torch.save(DSIFN().state_dict(), plain)
    with pytest.raises(CheckpointError, match="not a dsifn checkpoint"):
        load_checkpoint(plain)
    official = tmp_path / "official.pt"
    torch.save({"t1_base.features.0.weight": torch.zeros(1)}, official)
    with pytest.raises(CheckpointError, match="load_official_pytorch"):
        load_checkpoint(official)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def test_unsafe_pickles_are_not_executed(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "dsifn", "payload": object()}, path)
    with pytest.raises(CheckpointError, match=r"pickled Python objects.*never loads") as info:
        read_checkpoint(path)
    assert "weights_only" not in str(info.value) and "\x1b" not in str(info.value)


def test_weights_that_do_not_fit_the_config(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "m.pt", DSIFN())
    payload = torch.load(path, weights_only=True)
    payload["model_config"]["in_channels"] = 4
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(path)
    payload["model_config"]["in_channels"] = 3
    payload["model_config"]["shared_encoder"] = False
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(path)
    payload["model_config"]["colour"] = "red"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="invalid model configuration"):
        load_checkpoint(path)


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"whole")
    assert target.read_bytes() == b"whole"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_output_gets_the_usual_file_mode(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.bin").stat().st_mode & 0o777 == 0o644


def test_every_way_of_loading_weights_reports_a_shape_mismatch_as_checkpoint_error() -> None:
    from dsifn.models.checkpoint import model_from_checkpoint, model_with_weights

    state = DSIFN().state_dict()
    config = DSIFN(in_channels=4).config
    with pytest.raises(CheckpointError, match="size mismatch"):
        model_with_weights(config, state, source="x")
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint({"model_config": config.to_dict(), "state_dict": state})


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = tmp_path_factory.mktemp("saved") / "m.pt"
    save_checkpoint(path, DSIFN(encoder_weights=None))
    return torch.load(path, weights_only=True)


@pytest.fixture
def payload(saved: dict) -> dict:
    import copy

    return copy.deepcopy(saved)


def _first_weight(payload: dict) -> str:
    return next(k for k, v in payload["state_dict"].items() if v.is_floating_point())


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda p: p.update(format_version="1"), "malformed format_version '1'"),
        (lambda p: p.update(format_version=True), "malformed format_version"),
        (lambda p: p.update(format_version=0), "malformed format_version"),
        (lambda p: p.update(format_version=99), "newer than this dsifn"),
        (lambda p: p.update(meta=["threshold", 0.5]), "'meta' is a list, not a mapping"),
        (lambda p: p.update(meta={"threshold": "0.5"}), "malformed decision threshold '0.5'"),
        (lambda p: p.update(meta={"threshold": float("nan")}), "malformed decision threshold"),
        (lambda p: p.update(meta={"threshold": 1.5}), "malformed decision threshold 1.5"),
        (lambda p: p.update(meta={"threshold": -0.1}), "malformed decision threshold"),
        (lambda p: p["model_config"].update(in_channels="3"), "in_channels must be an integer"),
        (lambda p: p["model_config"].update(in_channels=3.5), "in_channels must be an integer"),
        (lambda p: p["model_config"].update(shared_encoder="no"), "must be true or false"),
        (lambda p: p["model_config"].update(dropout=[0.6]), "dropout must be a number"),
        (lambda p: p["model_config"].update(dropout=float("nan")), "dropout must be a finite"),
        (lambda p: p["model_config"].update(variant=3), "variant"),
        (lambda p: p["model_config"].update(normalization=[1, 2]), "normalization"),
        (lambda p: p["state_dict"].update({_first_weight(p): "weights"}), "not a tensor"),
    ],
)
def test_malformed_fields_are_one_line_checkpoint_errors(
    tmp_path: Path, payload: dict, edit, words
) -> None:
    edit(payload)
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match=words) as info:
        load_checkpoint(bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused(tmp_path: Path, payload: dict, value: float) -> None:
    # They would give a change map of nodata everywhere, without a word.
    payload["state_dict"][_first_weight(payload)].view(-1)[3] = value
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="1 NaN or infinite value"):
        load_checkpoint(bad)


def test_threshold_bounds_are_those_of_the_command_line(tmp_path: Path, payload: dict) -> None:
    from dsifn.evaluation.scoring import resolve_threshold

    for value in (0, 1.0):
        payload["meta"] = {"threshold": value}
        torch.save(payload, tmp_path / "ok.pt")
        model = load_checkpoint(tmp_path / "ok.pt")
        assert resolve_threshold(None, model) == float(value)


def test_junk_empty_and_pickled_files_are_named_in_our_words(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.touch()
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(256)) * 4)
    truncated = tmp_path / "truncated.pt"
    torch.save({"x": torch.zeros(100)}, truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, pickled)
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    for path, words in [
        (empty, "empty.pt is not a dsifn checkpoint: it is empty"),
        (junk, "junk.pt is not a dsifn checkpoint: it is not a file written by torch.save"),
        (truncated, "damaged or truncated"),
        (pickled, r"pickled Python objects \(torch.nn.modules.linear.Linear\)"),
        (folder, "checkpoint .*folder.pt is a folder, not a file"),
    ]:
        with pytest.raises(CheckpointError, match=words) as info:
            load_checkpoint(path)
        text = str(info.value)
        assert "\n" not in text and "\x1b" not in text and len(text) < 400, text
        assert "weights_only=False" not in text
        if path is not folder:
            assert "dsifn.save_checkpoint" in text


def test_atomic_path_syncs_the_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import stat

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        events.append("fsync folder" if stat.S_ISDIR(mode) else f"fsync {os.fstat(fd).st_size}")
        real_fsync(fd)

    def replace(src, dst) -> None:
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_path(tmp_path / "out.bin") as tmp:
        tmp.write_bytes(b"12345")
    assert events == ["fsync 5", "rename", "fsync folder"]
    assert (tmp_path / "out.bin").read_bytes() == b"12345"


def test_a_folder_that_cannot_be_moved_in_puts_the_old_one_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from dsifn.io.atomic import move_into_place

    final, new = tmp_path / "plugin", tmp_path / "work" / "plugin"
    final.mkdir()
    (final / "old.txt").write_text("old")
    new.mkdir(parents=True)
    (new / "new.txt").write_text("new")
    real_replace = os.replace

    def replace(src, dst) -> None:
        if Path(src) == new:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="No space"):
        move_into_place(new, final)
    assert [p.name for p in final.iterdir()] == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plugin", "work"]  # nothing aside


def test_output_checks_refuse_unwritable_places_whatever_overwrite_says(tmp_path: Path) -> None:
    from dsifn.errors import ConfigError
    from dsifn.io.atomic import check_output_folder, check_output_path

    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    folder = tmp_path / "folder"
    folder.mkdir()
    for overwrite in (False, True):
        with pytest.raises(ConfigError, match="blocker is a file, not a folder"):
            check_output_path(blocker / "out.tif", overwrite=overwrite)
        with pytest.raises(ConfigError, match="blocker is a file, not a folder"):
            check_output_path(blocker / "deeper" / "out.tif", overwrite=overwrite)
        with pytest.raises(ConfigError, match="is a folder, not a file"):
            check_output_path(folder, overwrite=overwrite)
    with pytest.raises(ConfigError, match="it is a file"):
        check_output_folder(blocker)
    with pytest.raises(ConfigError, match="blocker is a file, not a folder"):
        check_output_folder(blocker / "run")
    assert check_output_folder(folder / "new" / "run") == folder / "new" / "run"
    with pytest.raises(ConfigError), atomic_path(blocker / "x.bin", overwrite=True):
        raise AssertionError("the block must not run")
    assert blocker.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker", "folder"]
