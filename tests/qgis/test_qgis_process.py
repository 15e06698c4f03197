"""The plugin's child process, without QGIS: lines as they come, Cancel as an interrupt."""

from __future__ import annotations

import os
import sys
import time

import pytest

from fixtures.qgis import plugin_module

process = plugin_module("process")

# A stand-in for dsifn: progress lines, a work file it removes when asked to stop (SIGTERM, as
# dsifn's own handler does), a result line.
CHILD = """
import json, pathlib, signal, sys, time
def terminated(signum, frame):
    raise KeyboardInterrupt
work = pathlib.Path(sys.argv[1])
stubborn = sys.argv[2] == "stubborn"
signal.signal(signal.SIGTERM, signal.SIG_IGN if stubborn else terminated)
work.write_text("partial")
try:
    for done in range(int(sys.argv[3]) + 1):
        line = {"progress": done / int(sys.argv[3]), "done": done, "total": int(sys.argv[3]),
                "unit": "tile", "desc": "dsifn predict"}
        print(json.dumps(line), file=sys.stderr, flush=True)
        time.sleep(float(sys.argv[4]))
except KeyboardInterrupt:
    work.unlink()
    print("dsifn: terminated", file=sys.stderr)
    sys.exit(143)
print("dsifn: a notice", file=sys.stderr)
print("wrote out.tif (3 tiles, threshold 0.5)")
"""


class Recorder:
    def __init__(self, cancel_after=None):
        self.cancel_after = cancel_after
        self.steps, self.messages, self.output = [], [], []

    def listener(self):
        return process.Listener(
            progress=self.steps.append,
            message=self.messages.append,
            output=self.output.append,
            canceled=lambda: self.cancel_after is not None and len(self.steps) >= self.cancel_after,
        )


def _argv(tmp_path, mode="polite", steps=3, pause=0.0):
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    return [sys.executable, str(script), str(tmp_path / "work"), mode, str(steps), str(pause)]


def test_lines_are_reported_as_they_come(tmp_path):
    recorder = Recorder()
    outcome = process.run(_argv(tmp_path), os.environ, recorder.listener())
    assert outcome.returncode == 0 and not outcome.canceled
    assert [step.done for step in recorder.steps] == [0, 1, 2, 3]
    assert recorder.messages == outcome.stderr == ["dsifn: a notice"]
    assert recorder.output == outcome.stdout == ["wrote out.tif (3 tiles, threshold 0.5)"]


def test_cancel_stops_the_child_which_cleans_up(tmp_path):
    recorder = Recorder(cancel_after=1)
    start = time.monotonic()
    outcome = process.run(_argv(tmp_path, steps=100, pause=0.2), os.environ, recorder.listener())
    assert outcome.canceled and outcome.returncode == 143
    assert outcome.stderr[-1] == "dsifn: terminated"
    assert not (tmp_path / "work").exists()
    assert time.monotonic() - start < 10  # not the 20 s the child would take


def test_a_child_that_ignores_the_request_is_killed_after_the_grace(tmp_path, monkeypatch):
    monkeypatch.setattr(process, "GRACE_SECONDS", 0.5)
    recorder = Recorder(cancel_after=1)
    outcome = process.run(
        _argv(tmp_path, mode="stubborn", steps=100, pause=0.2), os.environ, recorder.listener()
    )
    assert outcome.canceled and outcome.returncode == -9


def test_a_program_that_cannot_start_is_an_os_error(tmp_path):
    with pytest.raises(OSError):
        process.run([str(tmp_path / "no-dsifn")], os.environ, Recorder().listener())


def test_an_error_in_a_listener_leaves_no_child(tmp_path):
    def fail(step):
        raise RuntimeError("listener failed")

    listener = process.Listener(progress=fail, message=print, output=print, canceled=lambda: False)
    with pytest.raises(RuntimeError, match="listener failed"):
        process.run(_argv(tmp_path, steps=100, pause=0.2), os.environ, listener)
    assert not (tmp_path / "work").exists()  # asked to stop: it cleaned up
