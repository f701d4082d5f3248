"""Progress output: a bar on a terminal, whole lines in a log, silence in a log for work shorter than the interval."""

from __future__ import annotations

import io

import pytest

from noisekit import progress as progress_module
from noisekit.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_log_gets_whole_lines_without_carriage_returns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)
    log = io.StringIO()
    with progress(total=3, desc="work", file=log, leave=False) as bar:
        for _ in range(3):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = text.splitlines()
    assert lines and all(line.startswith("work: ") for line in lines)
    assert "3/3" in lines[-1]  # the last state is kept in a log even when the caller asked leave=False


def test_short_work_prints_nothing_to_a_log() -> None:
    log = io.StringIO()
    for _ in progress(range(100), desc="quick", file=log):
        pass
    assert log.getvalue() == ""


def test_terminal_gets_tqdms_bar() -> None:
    tty = Terminal()
    for _ in progress(range(3), desc="bar", file=tty, mininterval=0):
        pass
    assert "\r" in tty.getvalue() and "bar: 100%" in tty.getvalue()
