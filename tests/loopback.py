"""Run an HTTP server on 127.0.0.1 in a background thread for the length of a ``with`` block."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def serving(server: http.server.HTTPServer) -> Iterator[str]:
    """Serve ``server`` (bound to 127.0.0.1) until the block ends; yield its base URL."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
