"""``dsifn predict`` on folders with two CPU processes: the maps of one process, errors shared."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image

from dsifn import DSIFN, save_checkpoint
from dsifn.cli.main import main
from fixtures.processes import become_rank, free_port
from fixtures.rasters import uint16_scene, write_geotiff

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "dsifn.pt"
    return save_checkpoint(path, DSIFN(encoder_weights=None), meta={"threshold": 0.4})


def _folders(root, sizes):
    # One pair per name: GeoTIFFs of (height, width) per date, or a PNG pair for ".png".
    before, after = root / "t1", root / "t2"
    before.mkdir(), after.mkdir()
    for i, (name, (h1, h2)) in enumerate(sizes.items()):
        for k, (folder, height) in enumerate(((before, h1), (after, h2))):
            if name.endswith(".png"):
                pixels = np.random.default_rng(10 * i + k).integers(0, 255, (height, 40, 3))
                Image.fromarray(pixels.astype(np.uint8)).save(folder / name)
            else:
                write_geotiff(folder / name, uint16_scene(10 * i + k, height, 40))
    return before, after


def _argv(checkpoint, before, after, out):
    argv = ["predict", "--checkpoint", str(checkpoint), "--before-dir", str(before)]
    argv += ["--after-dir", str(after), "--out-dir", str(out), "--device", "cpu"]
    return [*argv, "--precision", "fp32", "--quiet"]


def test_two_processes_write_the_maps_of_one_process(checkpoint, tmp_path, capsys):
    sizes = {"a.tif": (32, 32), "b.png": (24, 24), "c.tif": (48, 48)}
    before, after = _folders(tmp_path, sizes)
    shared, alone = tmp_path / "shared", tmp_path / "alone"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "dsifn.cli.main"]
    command += _argv(checkpoint, before, after, shared)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    # The reference: one process, on one thread as torchrun's processes are.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(_argv(checkpoint, before, after, alone)) == 0
    finally:
        torch.set_num_threads(threads)
    names = sorted(p.name for p in alone.iterdir())
    assert names == ["a.tif", "b.png", "c.tif"]
    assert sorted(p.name for p in shared.iterdir()) == names  # no work folders left behind
    for name in names:
        assert (shared / name).read_bytes() == (alone / name).read_bytes(), name
    # Rank 0 alone reports: each map once, then the totals.
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == [str(shared / n) for n in names]
    assert lines[-1] == "predicted 3 pairs on 2 processes (3 tiles)"
    assert capsys.readouterr().out.count("wrote") == 3


def _rank(rank, world, port, argv, out_dir):
    become_rank(rank, world, port)  # the command's exit status and stderr are recorded
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(argv)
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as file:
        json.dump({"status": status, "err": err.getvalue()}, file)


def test_a_failing_pair_stops_every_process_with_its_error(checkpoint, tmp_path):
    # Rank 1 takes b.tif, whose dates differ in extent; rank 0 takes a.tif, then would take c.tif.
    before, after = _folders(tmp_path, {"a.tif": (32, 32), "b.tif": (32, 16), "c.tif": (32, 32)})
    out = tmp_path / "out"
    argv = _argv(checkpoint, before, after, out)
    mp.spawn(_rank, args=(2, free_port(), argv, str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["status"] for r in ranks] == [2, 2]
    errors = [r["err"].strip().splitlines() for r in ranks]
    assert all(len(lines) == 1 for lines in errors), errors
    failed, other = errors[1][0], errors[0][0]
    assert failed.startswith("dsifn predict: error: T2 extent") and "pass --align" in failed
    assert other == failed.replace("error: ", "error: rank 1 failed: ", 1)
    assert sorted(p.name for p in out.iterdir()) == ["a.tif"]  # c.tif never started
