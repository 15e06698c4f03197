"""Library messages name parameters; the command line writes them as its flags."""

from __future__ import annotations

import argparse

from dsifn.cli.flags import in_flags, set_param
from dsifn.cli.main import main


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--tile-size", type=int)
    parser.add_argument("--bands")
    set_param(parser.add_argument("--data"), "data.root")
    return parser


def test_a_switch_is_its_flag_alone() -> None:
    message = "out.tif exists; pass `overwrite=True` to replace it"
    assert in_flags(message, _parser()) == "out.tif exists; pass --overwrite to replace it"


def test_a_value_follows_its_flag_without_python_quotes() -> None:
    message = 'choose `bands="4,3,2"` or a `tile_size=512` that fits'
    expected = "choose --bands 4,3,2 or a --tile-size 512 that fits"
    assert in_flags(message, _parser()) == expected


def test_an_option_can_name_the_parameter_it_sets() -> None:
    assert in_flags("no dataset: set `data.root`", _parser()) == "no dataset: set --data"


def test_a_parameter_no_option_sets_loses_its_quotes_only() -> None:
    assert in_flags("set `run.seed=3`", _parser()) == "set run.seed=3"
    assert in_flags("set `run.seed=3`", None) == "set run.seed=3"


def test_the_command_line_says_the_flag(tmp_path, capsys) -> None:
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "something").write_text("kept")
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("is not empty; pass --overwrite to replace the demo there")
    assert (tmp_path / "demo" / "something").read_text() == "kept"
