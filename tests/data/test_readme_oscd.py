"""The README's OSCD commands, as a user types them, on a generated copy of the download."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dsifn import load_checkpoint
from dsifn.cli.main import main
from dsifn.contract import InputContract
from fixtures.datasets import write_oscd
from fixtures.training import TINY

README = Path(__file__).resolve().parents[2] / "README.md"
# What makes the README's run take seconds on a CPU; appended, so it wins over the README's.
FAST = {
    "train": [*TINY, "epochs=1", "data.crop_size=32", "data.samples_per_epoch=2"],
    "evaluate": ["--device", "cpu", "--precision", "fp32", "--progress", "none"],
    "stats": ["--no-progress"],
}


def _commands() -> list[list[str]]:
    section = README.read_text().split("### OSCD as downloaded", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None
    return [shlex.split(line) for line in block[1].splitlines() if line.startswith("dsifn ")]


@pytest.mark.slow
def test_the_readme_commands_run_on_the_download_as_unpacked(tmp_path, capsys):
    root = write_oscd(tmp_path / "download", official=True, rect=True)
    commands = _commands()
    assert [c[1] for c in commands] == ["stats", "train", "evaluate"]
    for command in commands:
        argv = [
            str(root) if a == "OSCD" else a.replace("runs/", f"{tmp_path}/runs/")
            for a in command[1:]
        ]
        assert main([*argv, *FAST[argv[0]]]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "found OSCD layout (cities with imgs_1_rect/imgs_2_rect/cm)" in out
    model = load_checkpoint(tmp_path / "runs" / "oscd3" / "best.pt")
    contract = InputContract.of(model)
    assert contract.bands == ("B04", "B03", "B02") and contract.radiometry == "reflectance"
    assert "test (2 pairs)" in out and "F1" in out
