"""Progress display: tqdm on a terminal, a few plain lines when stderr is a log, JSON lines."""

from __future__ import annotations

import io
import json
import sys

import pytest

import dsifn.progress
from dsifn.progress import JsonProgress, PlainProgress, progress_bar, progress_mode


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


def test_json_lines_at_start_every_percent_and_end(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_mode("json"), progress_bar(300, "dsifn predict", "tile") as bar:
        assert isinstance(bar, JsonProgress)
        for _ in range(300):
            bar.update(1)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert len(lines) == 101  # 0 %, then one per percent; 100 % is not repeated at close
    assert lines[0] == {
        "progress": 0.0,
        "done": 0,
        "total": 300,
        "unit": "tile",
        "desc": "dsifn predict",
    }
    assert lines[40]["progress"] == 0.4 and lines[40]["done"] == 120
    assert lines[-1]["progress"] == 1.0 and lines[-1]["done"] == 300


def test_json_lines_print_at_once_and_close_an_unknown_total(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(dsifn.progress, "QUIET_SECONDS", 60.0)  # plain lines would wait
    with progress_mode("json"):
        assert list(progress_bar(desc="check", unit="pair", iterable=iter(range(3)))) == [0, 1, 2]
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(line["progress"], line["done"], line["total"]) for line in lines] == [
        (None, 0, None),
        (None, 3, None),
    ]


def test_json_error_adds_no_closing_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError), progress_mode("json"), progress_bar(4, "evaluate") as bar:
        bar.update(2)
        raise ValueError
    assert [json.loads(line)["done"] for line in capsys.readouterr().err.splitlines()] == [0, 2]


def test_mode_none_and_disabled_json_print_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_mode("none"), progress_bar(10, "quiet") as bar:
        bar.update(10)
    with progress_mode("json"), progress_bar(10, "quiet", enabled=False) as bar:
        bar.update(10)
    assert capsys.readouterr().err == ""


def test_mode_is_restored_and_checked(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_mode("json"):
        with progress_mode("none"):
            assert not progress_bar(1).enabled
        assert isinstance(progress_bar(1), JsonProgress)
    assert type(progress_bar(1)) is PlainProgress
    with pytest.raises(ValueError, match="auto, json, none"), progress_mode("bar"):  # type: ignore[arg-type]
        pass
