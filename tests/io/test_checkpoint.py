from pathlib import Path

import pytest
import torch

import dsifn
from dsifn import DSIFN, load_checkpoint, save_checkpoint
from dsifn.errors import CheckpointError, OutputExistsError
from dsifn.io.atomic import atomic_path
from dsifn.io.checkpoint import read_checkpoint


def test_round_trip_rebuilds_the_model_alone(tmp_path: Path) -> None:
    model = DSIFN(in_channels=4, shared_encoder=False, dropout=0.2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = save_checkpoint(tmp_path / "m.pt", model, meta={"threshold": 0.4})
    loaded = load_checkpoint(path)
    assert loaded.config == model.config
    assert loaded.checkpoint_meta == {"threshold": 0.4}
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
    with pytest.raises(OutputExistsError, match="--overwrite"):
        save_checkpoint(path, DSIFN())
    save_checkpoint(path, DSIFN(), overwrite=True)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
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
    with pytest.raises(CheckpointError, match="not a readable"):
        read_checkpoint(path)


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
    from dsifn.io.checkpoint import model_from_checkpoint, model_with_weights

    state = DSIFN().state_dict()
    config = DSIFN(in_channels=4).config
    with pytest.raises(CheckpointError, match="size mismatch"):
        model_with_weights(config, state, source="x")
    with pytest.raises(CheckpointError, match="do not fit"):
        model_from_checkpoint({"model_config": config.to_dict(), "state_dict": state})
