import re
import subprocess
import sys

import pytest

from dsifn import __version__
from dsifn.cli.main import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"dsifn {__version__}"


def test_info_counts_parameters_and_flops(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--size", "256"]) == 0
    out = capsys.readouterr().out
    assert "35,727,549" in out and "21,012,861" in out
    flops = float(re.search(r"([\d.]+) GFLOP", out).group(1))  # type: ignore[union-attr]
    assert 150 < flops < 165  # about 158 GFLOP (79 G multiply-accumulates) per 256x256 pair


def test_info_options(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--size", "64", "--separate-encoders", "--trainable-encoder"]) == 0
    out = capsys.readouterr().out
    total = int(re.search(r"parameters:\s+([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    trainable = int(re.search(r"trainable parameters:\s+([\d,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert total == trainable and round(total / 1e6, 1) == 50.4


def test_bad_input_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--size", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least 16" in err and "Traceback" not in err


def test_console_script_runs_without_traceback() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dsifn.cli.main", "info", "--size", "7"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "at least 16" in result.stderr


def test_in_channels_sets_the_bands_of_the_first_convolution(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["info", "--size", "64", "--in-channels", "4"]) == 0
    out = capsys.readouterr().out
    assert "4 bands" in out and "35,728,125" in out  # 3 x 3 x 64 weights more than with 3 bands


@pytest.mark.parametrize(
    ("name", "title", "parameters"),
    [
        ("fc_ef", "FC-EF (Daudt, Le Saux & Boulch, ICIP 2018), 4 bands", 1_350_433 + 288),
        ("fc_siam_conc", "FC-Siam-conc", 1_545_841 + 144),
        ("fc_siam_diff", "FC-Siam-diff", 1_350_001 + 144),
        ("cdnet", "CDNet (Alcantarilla et al., Auton. Robots 42, 2018)", 1_427_905 + 6_272),
    ],
)
def test_info_model_names_a_baseline(
    capsys: pytest.CaptureFixture[str], name: str, title: str, parameters: int
) -> None:
    assert main(["info", "--model", name, "--size", "64", "--in-channels", "4"]) == 0
    first, total, trainable, flops = capsys.readouterr().out.splitlines()
    assert first.startswith(title)
    assert f"{parameters:,d}" in total and f"{parameters:,d}" in trainable
    assert "one 64x64 pair" in flops


def test_dsifn_options_are_refused_for_a_baseline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", "fc_ef", "--variant", "keras", "--trainable-encoder"]) == 2
    assert capsys.readouterr().err == (
        "dsifn info: error: --trainable-encoder, --variant: DSIFN's option(s), not this network's\n"
    )


def test_the_parser_offers_every_registered_network(capsys) -> None:
    from dsifn.cli.main import build_parser
    from dsifn.models import MODEL_NAMES

    parser = build_parser()
    assert [parser.parse_args(["info", "--model", m]).model for m in MODEL_NAMES] == [*MODEL_NAMES]
    with pytest.raises(SystemExit):
        parser.parse_args(["info", "--model", "unet"])
    assert "invalid choice: 'unet'" in capsys.readouterr().err
