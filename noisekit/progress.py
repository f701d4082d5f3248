"""Progress bars that stay readable in logs: tqdm's bar on a terminal; when stderr is a file or a pipe, one plain
line every LOG_INTERVAL seconds (and a last one at the end) instead of thousands of carriage-return updates. Work
shorter than LOG_INTERVAL prints nothing there: its caller's one-line summary says enough."""

from __future__ import annotations

import io
import sys
import time
from typing import Any

from tqdm import tqdm

LOG_INTERVAL = 30.0  # seconds between lines when stderr is not a terminal


class Lines(io.TextIOBase):
    """A text stream for tqdm that turns each carriage-return refresh into a line of its own."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.start = stream, time.monotonic()

    def write(self, text: str) -> int:
        if time.monotonic() - self.start < LOG_INTERVAL:
            return len(text)
        for part in text.replace("\r", "\n").split("\n"):
            if part.strip():
                self.stream.write(part.rstrip() + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)`` on a terminal; in a log, lines at most every LOG_INTERVAL seconds."""
    stream = kwargs.pop("file", None) or sys.stderr
    if kwargs.get("disable") or (hasattr(stream, "isatty") and stream.isatty()):
        return tqdm(*args, file=stream, **kwargs)
    kwargs.update(disable=False, leave=True, mininterval=LOG_INTERVAL, ncols=100, ascii=True)
    return tqdm(*args, file=Lines(stream), **kwargs)
