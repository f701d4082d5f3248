"""A real threaded HTTP/1.1 server on 127.0.0.1 for the crawler's tests: scripted routes, generated images, and a
count of every request it answers."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import json
import struct
import threading
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from loopback import serving
from PIL import Image

Route = Callable[["Handler", int], None]  # (handler, how many times this path was requested before) -> response


def jpeg(seed: int, size: tuple[int, int] = (24, 16), quality: int = 90) -> bytes:
    """A small JPEG with smooth content (compresses and hashes like a photo)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize(size, Image.BILINEAR)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def with_comment(data: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after SOI: other bytes (and SHA-256), identical pixels."""
    payload = text.encode()
    return data[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def png(width: int, height: int, raw: bytes) -> bytes:
    """A grayscale 8-bit PNG declaring ``width`` x ``height`` whose IDAT holds ``raw`` (not checked against them)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


BASES = [jpeg(seed) for seed in range(8)]


def image_for(path: str) -> bytes:
    """A deterministic JPEG per path, distinct per path (its path in a comment)."""
    seed = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big")
    return with_comment(BASES[seed % len(BASES)], path)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes; Nagle would delay each by 40 ms
    server: Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def send(self, body: bytes, *, status: int = 200, ctype: str | None = "image/jpeg", **headers: str) -> None:
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        headers.setdefault("Content-Length", str(len(body)))
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        server = self.server
        with server.lock:
            nth = server.counts[self.path]
            server.counts[self.path] += 1
            server.times[self.path].append(time.monotonic())
            server.agents.add(self.headers.get("User-Agent", ""))
            server.active += 1
            server.max_active = max(server.max_active, server.active)
        # "active" spans the delay only: once the response is written the client may start its next request before
        # this thread runs again, so counting the write too would see one request more than the client allows
        try:
            if server.delay:
                time.sleep(server.delay)
        finally:
            with server.lock:
                server.active -= 1
        try:
            route = server.routes.get(self.path, server.default)
            route(self, nth)
        except (BrokenPipeError, ConnectionResetError):
            pass


def serve_generated(handler: Handler, nth: int) -> None:
    """The default route: :func:`image_for` of the path, or of a shared key for paths in ``server.shared``."""
    key = handler.server.shared.get(handler.path, handler.path)
    handler.send(image_for(key))


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.times: dict[str, list[float]] = defaultdict(list)
        self.agents: set[str] = set()
        self.active = self.max_active = 0
        self.delay = 0.0
        self.routes: dict[str, Route] = {}
        self.shared: dict[str, str] = {}  # path -> key: paths with one key serve identical bytes
        self.default: Route = serve_generated

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up (a timeout, a cap on the body) is part of the tests

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@contextmanager
def running() -> Iterator[Server]:
    server = Server()
    with serving(server):
        yield server


def shared_key(path: str) -> str:
    """Paths whose SHA-256 starts with a zero byte (about 1 in 256) all serve the same bytes: content duplicates."""
    return "shared" if hashlib.sha256(path.encode()).digest()[0] == 0 else path


def serve_counts(handler: Handler, nth: int) -> None:
    with handler.server.lock:
        counts = {k: v for k, v in handler.server.counts.items() if k != COUNTS}
    handler.send(json.dumps(counts).encode(), ctype="application/json")


COUNTS = "/__counts__"


def main() -> None:
    """Serve generated images from a process of its own (so the server does not share the crawler's GIL); print the
    base URL, then serve until killed. ``/__counts__`` answers the request count per path as JSON."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before each response")
    args = parser.parse_args()
    server = Server()
    server.delay = args.delay
    server.shared = _SharedKeys()
    server.routes[COUNTS] = serve_counts
    print(server.base, flush=True)
    server.serve_forever()


class _SharedKeys(dict):
    def get(self, path: str, default: str | None = None) -> str:  # type: ignore[override]
        return shared_key(path)


if __name__ == "__main__":
    main()
