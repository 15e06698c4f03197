"""BenchmarkConfig's checks, and how the command line reports them."""

from __future__ import annotations

import pytest

from dsifn.benchmark import BenchmarkConfig
from dsifn.cli.main import main
from dsifn.errors import ConfigError


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        # The library names its parameters; the command line writes them as its flags.
        (["--size", "8"], "--size must be at least 16"),
        (["--steps", "0"], "--steps and --rounds must be at least 1, --warmup at least 0"),
        (["--scene-size", "16", "--size", "32"], "--scene-size must be at least --size (32)"),
        (["--infer-batch", "0"], "--infer-batch must be at least 1"),
        (["--peak-tflops", "-1"], "--peak-tflops must be positive"),
        (["--precision", "fp16"], "CUDA"),
        (["--size", "16", "--batch", "1", "--mode", "train"], "--batch of at least 2"),
    ],
)
def test_benchmark_command_bad_options(argv, message, capsys):
    assert main(["benchmark", "--device", "cpu", "--accuracy-pairs", "0", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_config_checks_mode():
    with pytest.raises(ConfigError, match="mode"):
        BenchmarkConfig(mode="everything")  # type: ignore[arg-type]
