"""Progress output: a bar on a terminal; in a file or a pipe one plain line every LOG_INTERVAL seconds (a fake clock
drives the time) and a last one at the end; silence there for work shorter than the interval."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from noisekit import progress as progress_module
from noisekit.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def ticking(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A clock that moves on 10 s at every reading."""
    now = iter(range(0, 10**6, 10))
    monkeypatch.setattr(progress_module, "clock", lambda: float(next(now)))
    yield


def test_a_log_file_gets_a_plain_line_every_interval(ticking, tmp_path: Path) -> None:
    with (tmp_path / "log.txt").open("w") as log:  # a real file: not a terminal
        with progress(total=8, desc="work", unit="img", file=log, leave=False) as bar:
            for step in range(8):
                bar.update(1)
                bar.set_postfix(step=step)
    # readings: start 0, updates at 10..80, close at 90; a line once 30 s have passed since the last one
    assert (tmp_path / "log.txt").read_text() == (
        "work: 3/8 img (38%) in 00:30, 0.1 img/s, 00:50 left, step=1\n"
        "work: 6/8 img (75%) in 01:00, 0.1 img/s, 00:20 left, step=4\n"
        "work: 8/8 img (100%) in 01:30, 0.0889 img/s, step=7\n"
    )


def test_a_pipe_gets_lines_from_an_iterable_and_bytes_scaled(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from noisekit import progress as p
        ticks = iter(range(0, 10**6, 20))
        p.clock = lambda: float(next(ticks))
        for _ in p.progress(range(5), desc="crawl", unit="row"):
            pass
        with p.progress(total=4 * 2**20, unit="B", unit_scale=True, desc="x.tgz") as bar:
            for _ in range(4):
                bar.update(2**20)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2]
    )
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    assert done.stderr.splitlines() == [
        "crawl: 2/5 row (40%) in 00:40, 0.05 row/s, 01:00 left",
        "crawl: 4/5 row (80%) in 01:20, 0.05 row/s, 00:20 left",
        "crawl: 5/5 row (100%) in 02:00, 0.0417 row/s",
        "x.tgz: 2.10M/4.19M B (50%) in 00:40, 52.4k B/s, 00:40 left",
        "x.tgz: 4.19M/4.19M B (100%) in 01:20, 52.4k B/s",
    ]


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


def test_the_crawl_writes_lines_to_a_log(ticking, runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real caller: the crawl's rows, counted with its ok/failed postfix, in CliRunner's stderr (not a terminal)."""
    from image_server import running

    from noisekit.cli import app

    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 10.0)  # every reading of the clock is a line
    with running() as server:
        (tmp_path / "list.csv").write_text("".join(f"{server.base}/{k}.jpg,{k}\n" for k in range(3)))
        result = runner.invoke(app, ["crawl", str(tmp_path / "list.csv"), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "crawl: 1/3 row (33%) in 00:10, 0.1 row/s, 00:20 left",
        "crawl: 2/3 row (67%) in 00:20, 0.1 row/s, 00:10 left",
        "crawl: 3/3 row (100%) in 00:30, 0.1 row/s",
        "crawl: 3/3 row (100%) in 00:40, 0.075 row/s, ok=3, failed=0",  # the crawl's counts, set as it ends
    ]
