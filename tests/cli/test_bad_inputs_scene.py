"""dsifn predict stopped from outside: SIGTERM cleans up; dead runs' folders go next run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import torch

from dsifn import DSIFN, save_checkpoint
from dsifn.io.atomic import remove_stale as _remove_stale
from fixtures.rasters import uint16_scene, write_geotiff


def _wait_for(condition, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_during_predict_leaves_nothing(tmp_path):
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "dsifn.pt", DSIFN(encoder_weights=None))
    t1 = write_geotiff(tmp_path / "t1.tif", uint16_scene(1, 512, 512))
    t2 = write_geotiff(tmp_path / "t2.tif", uint16_scene(2, 512, 512))
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "dsifn.cli.main", "predict", "--checkpoint", str(checkpoint)]
    argv += ["--before", str(t1), "--after", str(t2), "--out", str(out / "change.tif")]
    argv += ["--device", "cpu", "--precision", "fp32", "--tta", "--quiet"]
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        started = _wait_for(lambda: any(tmp_path.glob(".dsifn-*/probability.tif")), 120)
        assert started, "the run never made its working raster"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert err.strip().splitlines()[-1] == "dsifn: terminated"
    assert "Traceback" not in err
    assert not out.exists()  # not even the output's folder
    assert not any(tmp_path.glob(".dsifn-*"))


def test_work_folders_of_dead_runs_are_removed(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(finished.stdout)
    host = socket.gethostname()
    for name, owner in [
        (".dsifn-dead", f"{host} {dead}"),
        (".dsifn-live", f"{host} {os.getpid()}"),
        (".dsifn-elsewhere", f"another-host {dead}"),
        (".dsifn-unowned", None),
    ]:
        folder = tmp_path / name
        folder.mkdir()
        (folder / "probability.tif").write_bytes(b"data")
        if owner is not None:
            (folder / "owner").write_text(owner)
    _remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".dsifn-elsewhere",
        ".dsifn-live",
        ".dsifn-unowned",
    ]
