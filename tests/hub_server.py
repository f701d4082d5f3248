"""A real HTTP server on 127.0.0.1 that answers the few Hub API calls huggingface_hub makes to create a dataset
repository and commit files to it (create_repo + create_commit), and records what it received.

Endpoints (as huggingface_hub 2.x calls them): ``POST /api/repos/create``, ``POST /api/validate-yaml``,
``POST /api/datasets/{owner}/{name}/preupload/{revision}`` (answers ``uploadMode: regular`` for every file, so the
content travels base64-encoded inside the commit, with no LFS or Xet transfer), and
``POST /api/datasets/{owner}/{name}/commit/{revision}`` (NDJSON: a header line, then one line per file).
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from loopback import serving


@dataclass
class HubRecord:
    repos: dict[str, str] = field(default_factory=dict)  # repo id -> type
    files: dict[str, dict[str, bytes]] = field(default_factory=dict)  # repo id -> path -> content
    commits: list[dict] = field(default_factory=list)  # commit headers
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Authorization header)


REPO = r"/api/datasets/(?P<repo>[^/]+/[^/]+)/(?P<verb>preupload|commit)/(?P<rev>[^/?]+)"


def _handler(record: HubRecord, lock: threading.Lock) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _reply(self, status: int, payload: dict) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            body = self._body()
            path = self.path.split("?", 1)[0]
            base = f"http://{self.headers['Host']}"
            with lock:
                record.requests.append(("POST", path, self.headers.get("Authorization", "")))
            if path == "/api/repos/create":
                args = json.loads(body)
                repo = f"{args['organization']}/{args['name']}"
                url = f"{base}/datasets/{repo}"
                with lock:
                    if repo in record.repos:
                        return self._reply(409, {"error": "You already created this dataset repo", "url": url})
                    record.repos[repo] = args.get("type", "model")
                    record.files[repo] = {}
                return self._reply(200, {"url": url})
            if path == "/api/validate-yaml":
                return self._reply(200, {"errors": [], "warnings": []})
            match = re.fullmatch(REPO, path)
            if not match or match["repo"] not in record.repos:
                return self._reply(404, {"error": f"no route or repository for {path}"})
            if match["verb"] == "preupload":
                files = json.loads(body)["files"]
                answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
                return self._reply(200, {"files": answer})
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            with lock:
                for line in lines:
                    if line["key"] == "header":
                        record.commits.append(line["value"])
                    elif line["key"] == "file" and line["value"].get("encoding") == "base64":
                        record.files[match["repo"]][line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                    else:
                        return self._reply(400, {"error": f"unsupported commit operation {line['key']}"})
                oid = f"{len(record.commits):040x}"
            return self._reply(200, {"commitUrl": f"{base}/datasets/{match['repo']}/commit/{oid}", "commitOid": oid})

    return Handler


@contextmanager
def fake_hub() -> Iterator[tuple[str, HubRecord]]:
    """Serve the fake Hub on a free port; yield (endpoint URL, what it records)."""
    record, lock = HubRecord(), threading.Lock()
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(record, lock))) as url:
        yield url, record
