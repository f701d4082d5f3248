"""Progress that stays readable in logs: tqdm's bar on a terminal; when stderr is a file or a pipe, one plain line
every LOG_INTERVAL seconds (and a last one at the end) instead of a bar. Work shorter than LOG_INTERVAL prints
nothing there: its caller's one-line summary says enough.

tqdm itself is not used in a log: its monitor thread forces a refresh every ``maxinterval`` (10 s) whatever
``mininterval`` says, and each refresh is a bar drawn with carriage returns."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between lines when stderr is not a terminal
clock = time.monotonic  # what the lines' timing reads (tests replace it with a fake clock)


def on_terminal(stream: Any = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class LogProgress:
    """The part of tqdm's interface that noisekit and prism use, writing a plain line at most every LOG_INTERVAL s:
    ``train: 450/1,000 it (45%) in 00:30, 15.0 it/s, 00:36 left, loss=0.123``."""

    def __init__(
        self,
        iterable: Iterable | None = None,
        *,
        stream: Any,
        total: float | None = None,
        desc: str = "",
        unit: str = "it",
        unit_scale: bool = False,
        **_tqdm_only: Any,  # leave, mininterval, ...: a terminal's concerns
    ) -> None:
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.iterable, self.stream, self.total = iterable, stream, total
        self.desc, self.unit, self.unit_scale = desc, unit, unit_scale
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = clock()
        self.shown: tuple[float, str] | None = None  # the count and postfix the last line showed

    def __iter__(self) -> Iterator:
        try:
            for item in self.iterable or ():
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = clock()
        if now - self.last >= LOG_INTERVAL:
            self._line(now)

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{key}={value}" for key, value in values.items())

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        now = clock()
        if now - self.start >= LOG_INTERVAL and self.shown != (self.n, self.postfix):
            self._line(now)

    def _count(self, value: float) -> str:
        return tqdm.format_sizeof(value) if self.unit_scale else f"{value:,.0f}"

    def _line(self, now: float) -> None:
        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        done = self._count(self.n) + (f"/{self._count(self.total)}" if self.total else "")
        parts = [f"{done} {self.unit}" + (f" ({100 * self.n / self.total:.0f}%)" if self.total else "")]
        parts[0] += f" in {tqdm.format_interval(elapsed)}"
        parts.append(f"{self._count(rate) if self.unit_scale else f'{rate:.3g}'} {self.unit}/s")
        if self.total and rate > 0 and self.n < self.total:
            parts.append(f"{tqdm.format_interval((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(self.postfix)
        self.stream.write(f"{self.desc}: " * bool(self.desc) + ", ".join(parts) + "\n")
        self.stream.flush()
        self.last, self.shown = now, (self.n, self.postfix)


def progress(*args: Any, **kwargs: Any) -> tqdm | LogProgress:
    """``tqdm(*args, **kwargs)`` on a terminal; in a log, plain lines at most every LOG_INTERVAL seconds."""
    stream = kwargs.pop("file", None) or sys.stderr
    if kwargs.get("disable") or on_terminal(stream):
        return tqdm(*args, file=stream, **kwargs)
    kwargs.pop("disable", None)  # None means "no bar off a terminal" to tqdm: here it gets lines
    return LogProgress(*args, stream=stream, **kwargs)


@contextmanager
def library_bars_off_in_logs() -> Iterator[None]:
    """Silence the tqdm bars of datasets and huggingface_hub while stderr is a file or a pipe (their bars follow
    no interval); on a terminal they show as usual."""
    if on_terminal():
        yield
        return
    import datasets
    import huggingface_hub.utils as hub_utils

    were = datasets.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    hub_utils.disable_progress_bars()
    try:
        yield
    finally:
        if were[0]:
            datasets.enable_progress_bars()
        if were[1]:
            hub_utils.enable_progress_bars()
