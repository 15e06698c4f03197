"""Progress display: tqdm on a terminal, a few plain lines when stderr is a log."""

from __future__ import annotations

import io
import sys

import pytest

import dsifn.progress
from dsifn.progress import PlainProgress, progress_bar


@pytest.fixture(autouse=True)
def _no_quiet_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dsifn.progress, "QUIET_SECONDS", 0.0)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(300, "dsifn predict", "tile") as bar:
        assert isinstance(bar, PlainProgress)
        for _ in range(300):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10  # one per tenth; the 100 % line is not repeated at close
    assert lines[3] == "dsifn predict: 40 % (120/300 tiles)"
    assert lines[-1] == "dsifn predict: 100 % (300/300 tiles)"
    assert "\r" not in capsys.readouterr().err


def test_plain_lines_carry_description_and_postfix(capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress_bar(4, "epoch 1/2", "batch", initial=2)
    bar.set_postfix(loss="0.3000")
    bar.update(1)
    bar.set_description("epoch 2/2")
    bar.close()
    bar.close()
    assert capsys.readouterr().err.splitlines() == [
        "epoch 1/2: 75 % (3/4 batches) loss=0.3000",
        "epoch 2/2: 75 % (3/4 batches) loss=0.3000",
    ]


def test_plain_iterable_counts_items(capsys: pytest.CaptureFixture[str]) -> None:
    assert list(progress_bar(desc="check", unit="pair", iterable=range(5))) == list(range(5))
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1] == "check: 100 % (5/5 pairs)"
    assert len(lines) == 5


def test_disabled_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(10, "quiet", enabled=False) as bar:
        bar.update(10)
    assert capsys.readouterr().err == ""


def test_terminal_gets_a_tqdm_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm.auto import tqdm

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar(50, "dsifn predict", "tile") as bar:
        assert isinstance(bar, tqdm)
        for _ in range(50):
            bar.update(1)
    assert "dsifn predict" in terminal.getvalue()
    assert "\r" in terminal.getvalue()  # redrawn in place


def test_plain_lines_wait_for_slow_work(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setattr(dsifn.progress, "QUIET_SECONDS", 60.0)
    with progress_bar(10, "quick") as bar:
        bar.update(10)
    assert capsys.readouterr().err == ""


def test_an_error_adds_no_closing_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError), progress_bar(4, "evaluate", "pair") as bar:
        bar.update(2)
        raise ValueError
    assert capsys.readouterr().err.splitlines() == ["evaluate: 50 % (2/4 pairs)"]
