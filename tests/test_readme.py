"""The README's Python examples run as written, in a folder holding the files they name.

Each ```python block runs in a fresh folder where the files a reader would have are made small:
``model.pt`` (a 3-band checkpoint), ``t1/`` and ``t2/`` band files, a ``LEVIR-CD`` dataset and
the authors' ``dsifn_official.pth``. Blocks for QGIS's own Python (``import processing``) run in
the QGIS tests instead.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from dsifn import DSIFN, save_checkpoint
from fixtures.datasets import write_levir
from fixtures.official import Official, VGGBase, randomise
from fixtures.rasters import uint16_scene, write_geotiff

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
PLAIN = [b for b in BLOCKS if "import processing" not in b]


def _sandbox(folder: Path) -> None:
    """The files the README's examples name, small."""
    torch.manual_seed(0)
    save_checkpoint(folder / "model.pt", DSIFN(encoder_weights=None))
    for date in (1, 2):
        for i, band in enumerate(("B04", "B03", "B02")):
            data = uint16_scene(10 * date + i, 40, 52, bands=1)
            write_geotiff(folder / f"t{date}" / f"{band}.tif", data)
    write_levir(folder / "LEVIR-CD", size=32, counts=(2, 1, 1))
    base = VGGBase()
    torch.save(randomise(Official(base, base)).state_dict(), folder / "dsifn_official.pth")


def test_readme_has_python_examples() -> None:
    assert len(PLAIN) >= 5
    assert not re.findall(r"```text\n(?:from|import) ", README.read_text())  # none left as text


@pytest.mark.parametrize("code", PLAIN, ids=[f"block{i}" for i in range(len(PLAIN))])
def test_readme_python_block_runs(code: str, tmp_path, monkeypatch, one_thread) -> None:
    _sandbox(tmp_path)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace  # the block defined what it shows
    if "predict_scene" in code:
        assert (tmp_path / "change.tif").is_file() and (tmp_path / "changes.gpkg").is_file()
    if "train(" in code:
        assert (tmp_path / "runs" / "levir" / "best.pt").is_file()


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest -q" in README.read_text() and "python -m pytest -q" in ci


def test_the_numbers_dsifn_info_quotes_are_its_own(capsys) -> None:
    from dsifn.cli.main import main

    assert main(["info", "--size", "512"]) == 0
    printed = capsys.readouterr().out
    text = README.read_text()
    quoted = re.search(r"`dsifn info --size 512` prints.*?\(([\d.]+) GFLOP", text, re.DOTALL)
    assert quoted is not None and f"{quoted.group(1)} GFLOP" in printed
    assert np.isfinite(float(quoted.group(1)))
