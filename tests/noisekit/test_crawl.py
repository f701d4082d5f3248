"""The crawler against a real HTTP server on 127.0.0.1: hostile responses, the authors' full CARS-98N list, a
SIGKILL halfway and a resume, every input format, and the CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cli_checks import one_line_error
from image_server import COUNTS, Handler, jpeg, png, running, shared_key
from PIL import Image

from noisekit.cli import app
from noisekit.crawl.crawler import USER_AGENT, CrawlOptions, crawl
from noisekit.crawl.fetch import inspect_image
from noisekit.crawl.record import JOURNAL, RECORD, load_record
from noisekit.errors import NoisekitError

CARS_98N = Path(__file__).parents[1] / "data" / "prism-official" / "CARS_98N_list.csv"
PINIMG = "https://i.pinimg.com"
FAST = CrawlOptions(threads=8, timeout=0.5, retries=2, backoff=0.05, max_bytes=64_000, progress=False)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _frame(out: Path) -> pd.DataFrame:
    return load_record(out).frame()


def _check_store(out: Path, frame: pd.DataFrame) -> None:
    """Every stored file is whole: it decodes, its name is its SHA-256 and the record agrees; no other file is there."""
    ok = frame[frame["status"] == "ok"]
    stored = {str(p.relative_to(out)) for p in (out / "images").rglob("*") if p.is_file()}
    assert stored == set(ok["path"])
    for rel, sha in set(zip(ok["path"], ok["sha256"], strict=True)):
        data = (out / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha == Path(rel).stem
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    # Rows share a file exactly when they share content.
    assert ok.groupby("path")["sha256"].nunique().max() == 1
    assert ok.groupby("sha256")["path"].nunique().max() == 1


# --- hostile server --------------------------------------------------------------------------------------------------


def _gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (12, 9), 3).save(buf, format="GIF")
    return buf.getvalue()


def _png_bad_crc() -> bytes:
    data = bytearray(png(4, 4, bytes(4 * 5)))
    data[-13] ^= 0xFF  # inside IDAT's CRC (IEND, the last 12 bytes, follows it)
    return bytes(data)


def _no_length(body: bytes) -> object:
    def route(handler: Handler, nth: int) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/jpeg")
        handler.send_header("Connection", "close")
        handler.end_headers()
        handler.wfile.write(body)
        handler.close_connection = True

    return route


def _short_body(handler: Handler, nth: int) -> None:
    body = jpeg(7, (64, 64))
    handler.send_response(200)
    handler.send_header("Content-Type", "image/jpeg")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body[: len(body) // 2])
    handler.close_connection = True


def _hostile_routes(server) -> None:  # type: ignore[no-untyped-def]
    big = jpeg(3, (600, 600), quality=100)
    assert len(big) > FAST.max_bytes
    whole = jpeg(5, (96, 96))
    routes = {
        "/gif/x.gif": lambda h, n: h.send(_gif(), ctype="image/gif"),
        "/404.jpg": lambda h, n: h.send(b"no", status=404, ctype="text/plain"),
        "/flaky.jpg": lambda h, n: h.send(b"oops", status=500, ctype="text/plain") if n == 0 else h.send(jpeg(1)),
        "/throttled.jpg": lambda h, n: (
            h.send(b"slow down", status=429, ctype="text/plain", Retry_After="1") if n == 0 else h.send(jpeg(2))
        ),
        "/slow.jpg": lambda h, n: (time.sleep(1.5), h.send(jpeg(3))),
        "/loop": lambda h, n: h.send(b"", status=302, ctype=None, Location="/loop"),
        "/moved.jpg": lambda h, n: h.send(b"", status=301, ctype=None, Location="/ok/target.jpg"),
        "/to-file": lambda h, n: h.send(b"", status=302, ctype=None, Location="file:///etc/passwd"),
        "/html-as-jpeg.jpg": lambda h, n: h.send(b"<html><body>not found</body></html>", ctype="image/jpeg"),
        "/page.html": lambda h, n: h.send(b"<html></html>", ctype="text/html; charset=utf-8"),
        "/truncated.jpg": lambda h, n: h.send(whole[: len(whole) * 6 // 10]),
        "/short-body.jpg": _short_body,
        "/big.jpg": lambda h, n: h.send(big),
        "/big-unannounced.jpg": _no_length(big),
        "/bomb.png": lambda h, n: h.send(png(30000, 30000, b"\x00" * 64), ctype="image/png"),
        "/bad-crc.png": lambda h, n: h.send(_png_bad_crc(), ctype="image/png"),
    }
    server.routes.update(routes)
    server.shared.update({"/same-1.jpg": "same", "/same-2.jpg": "same"})


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


EXPECTED = [  # (path or URL, label, status, part of the error)
    ("/ok/a.jpg", 0, "ok", None),
    ("/ok/a.jpg", 5, "ok", None),  # the same URL under another label: fetched once
    ("/gif/x.gif", 1, "ok", None),
    ("/404.jpg", 1, "http_error", "HTTP 404"),
    ("/flaky.jpg", 2, "ok", None),
    ("/throttled.jpg", 2, "ok", None),
    ("/slow.jpg", 3, "timeout", "timeout"),
    ("/loop", 3, "too_many_redirects", "10 redirects"),
    ("/moved.jpg", 3, "ok", None),
    ("/to-file", 4, "bad_url", "not http or https"),
    ("/html-as-jpeg.jpg", 4, "not_image", "not an image"),
    ("/page.html", 4, "not_image", "content type text/html"),
    ("/truncated.jpg", 5, "truncated", "truncated"),
    ("/short-body.jpg", 5, "truncated", "closed before the whole body"),
    ("/big.jpg", 6, "too_large", "Content-Length"),
    ("/big-unannounced.jpg", 6, "too_large", "body exceeds max_bytes"),
    ("/bomb.png", 6, "decompression_bomb", "exceeds"),
    ("/bad-crc.png", 7, "corrupt", "does not decode"),
    ("/..%2F..%2Fx.jpg", 7, "ok", None),
    ("/same-1.jpg", 8, "ok", None),
    ("/same-2.jpg", 8, "ok", None),
    ("FILE", 9, "bad_url", "unsupported scheme 'file'"),
    ("ftp://127.0.0.1/x.jpg", 9, "bad_url", "unsupported scheme 'ftp'"),
    ("not a url", 9, "bad_url", "unsupported scheme"),
    ("REFUSED", 9, "connection_error", "could not connect"),
]


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[tuple[object, Path]]:
    with running() as server:
        _hostile_routes(server)
        secret = tmp_path / "secret" / "x.jpg"
        secret.parent.mkdir()
        secret.write_bytes(jpeg(99))
        port = _closed_port()
        lines = []
        for where, label, _, _ in EXPECTED:
            url = {"FILE": secret.as_uri(), "REFUSED": f"http://127.0.0.1:{port}/x.jpg"}.get(where, where)
            lines.append(f"{server.base + url if url.startswith('/') else url},{label}\n")
        (tmp_path / "list.csv").write_text("".join(lines))
        yield server, tmp_path


def test_hostile_cases_end_as_rows_with_their_reason(hostile, tmp_path: Path) -> None:
    server, _ = hostile
    before = _files(tmp_path)
    summary = crawl(tmp_path / "list.csv", tmp_path / "out", FAST)

    frame = _frame(tmp_path / "out")
    assert list(frame["row"]) == list(range(len(EXPECTED))) and list(frame["label"]) == [e[1] for e in EXPECTED]
    for row, (where, _, status, reason) in enumerate(EXPECTED):
        got = frame.iloc[row]
        assert got["status"] == status, (where, got["error"])
        if reason is None:
            assert pd.isna(got["error"])
        else:
            assert reason in got["error"], (where, got["error"])
    http = dict(zip(frame["url"].str.replace(server.base, ""), frame["http_status"], strict=True))
    assert http["/404.jpg"] == 404 and http["/flaky.jpg"] == 200 and http["/html-as-jpeg.jpg"] == 200
    assert pd.isna(http["ftp://127.0.0.1/x.jpg"])

    # Retries: 500 then 200, and 429 whose Retry-After (1 s) was waited for; the rest fetched once.
    assert server.counts["/flaky.jpg"] == 2 and server.counts["/throttled.jpg"] == 2
    first, second = server.times["/throttled.jpg"]
    assert second - first >= 0.95
    assert server.counts["/ok/a.jpg"] == 1 and server.counts["/404.jpg"] == 1 and server.counts["/bomb.png"] == 1
    assert server.agents == {USER_AGENT}

    # Content-addressed storage: shared URL and shared bytes share a file; nothing named after the URL.
    by_url = frame.set_index(frame["url"].str.replace(server.base, ""))
    assert by_url.loc["/ok/a.jpg", "path"].nunique() == 1
    assert by_url.loc["/same-1.jpg", "path"] == by_url.loc["/same-2.jpg", "path"]
    assert by_url.loc["/gif/x.gif", "path"].endswith(".gif") and by_url.loc["/gif/x.gif", "format"] == "GIF"
    assert by_url.loc["/..%2F..%2Fx.jpg", "path"].startswith("images/")
    assert (frame.loc[frame["status"] == "ok", ["width", "height", "bytes"]] > 0).all().all()
    _check_store(tmp_path / "out", frame)

    # Nothing outside --out changed; inside it only the record, the lock and images/.
    after = _files(tmp_path)
    assert {p for p in after - before if not p.startswith("out")} == set()
    assert before <= after
    assert {p.split("/")[1] for p in after - before if p.count("/") >= 1} <= {RECORD, ".crawl.lock", "images"}
    assert not list((tmp_path / "out").rglob("*.tmp")) and not (tmp_path / "out" / JOURNAL).exists()
    assert not any("x.jpg" in p for p in after - before)

    assert summary.ok_rows == sum(e[2] == "ok" for e in EXPECTED) and summary.rows == len(EXPECTED)
    assert summary.failed_rows["bad_url"] == 4 and summary.failed_rows["too_large"] == 2
    assert "failed (bad_url 4" in summary.line()


def test_own_pixel_cap_and_per_host_limit(tmp_path: Path) -> None:
    from noisekit.crawl.fetch import Failure

    with pytest.raises(Failure, match="exceeds max_pixels 5,000"):
        inspect_image(png(100, 100, bytes(100 * 101)), max_pixels=5_000)
    with running() as server:
        server.delay = 0.05
        (tmp_path / "list.csv").write_text("".join(f"{server.base}/img/{i}.jpg,{i}\n" for i in range(24)))
        options = CrawlOptions(threads=8, max_per_host=2, progress=False)
        crawl(tmp_path / "list.csv", tmp_path / "two", options)
        assert server.max_active == 2
        server.max_active = 0
        crawl(tmp_path / "list.csv", tmp_path / "eight", CrawlOptions(threads=8, max_per_host=8, progress=False))
        assert server.max_active > 2


# --- the authors' list -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_process() -> Iterator[str]:
    """The image server in a process of its own: 9,567 rows are quicker when it does not share the test's GIL."""
    script = Path(__file__).parents[1] / "image_server.py"
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip() if proc.stdout else ""
    finally:
        proc.kill()
        proc.wait()


def test_real_cars98n_list_every_url_once(image_process: str, tmp_path: Path) -> None:
    base = image_process
    lines = CARS_98N.read_text().splitlines()
    urls = [line.rsplit(",", 1)[0] for line in lines]
    assert (len(lines), len(set(urls))) == (9_567, 8_626)

    options = CrawlOptions(threads=16, url_rewrites=((PINIMG, base),), progress=False)
    summary = crawl(CARS_98N, tmp_path / "out", options)
    assert (summary.rows, summary.urls, summary.ok_rows, summary.fetched_urls) == (9_567, 8_626, 9_567, 8_626)

    counts = json.load(urllib.request.urlopen(base + COUNTS))
    paths = {u.replace(PINIMG, "") for u in urls}
    assert set(counts) == paths and set(counts.values()) == {1}

    frame = _frame(tmp_path / "out")
    assert list(frame["row"]) == list(range(9_567))
    assert frame["url"].iloc[0] == urls[0] and frame["label"].iloc[0] == 0  # the headerless first row is kept
    assert list(frame["label"]) == [int(line.rsplit(",", 1)[1]) for line in lines]
    _check_store(tmp_path / "out", frame)
    shared = {p for p in paths if shared_key(p) == "shared"}
    assert 10 <= len(shared) <= 80
    assert frame["path"].nunique() == len(paths) - len(shared) + 1
    assert frame.groupby("url")["path"].nunique().max() == 1


def test_sigkill_then_resume(tmp_path: Path) -> None:
    lines = CARS_98N.read_text().splitlines()[:1_200]
    listing = tmp_path / "list.csv"
    listing.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    with running() as server:
        server.delay = 0.02
        cmd = [sys.executable, "-m", "noisekit", "crawl", str(listing), "--out", str(out), "--threads", "4"]
        cmd += ["--url-rewrite", f"{PINIMG}={server.base}"]
        env = os.environ | {"TQDM_DISABLE": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.monotonic() + 60
        while len(list(out.glob("images/*/*.jpg"))) < 250 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read() if proc.stderr else ""

        before = load_record(out)
        finished = {url for url, status in zip(before.columns["fetched_url"], before.status, strict=True) if status}
        assert 100 < len(finished) < len({line.rsplit(",", 1)[0] for line in lines})

        server.delay = 0
        summary = crawl(listing, out, CrawlOptions(threads=8, resume=True, url_rewrites=((PINIMG, server.base),)))

    frame = _frame(out)
    assert len(frame) == 1_200 and list(frame["row"]) == list(range(1_200)) and (frame["status"] == "ok").all()
    assert summary.skipped_rows >= len(finished)
    _check_store(out, frame)
    assert not list(out.rglob("*.tmp")) and not (out / JOURNAL).exists()
    for url in finished:  # finished before the kill: not fetched again
        assert server.counts[url.replace(server.base, "")] == 1
    twice = [p for p, n in server.counts.items() if n > 1]
    assert max(server.counts.values()) <= 2 and len(twice) <= 2 * 4  # only what was in flight at the kill
    assert set(server.counts) == {line.rsplit(",", 1)[0].replace(PINIMG, "") for line in lines}


# --- resume, retry, input formats, CLI -------------------------------------------------------------------------------


def test_resume_and_retry_failed(tmp_path: Path) -> None:
    with running() as server:
        state = {"ready": False}
        server.routes["/later.jpg"] = lambda h, n: h.send(jpeg(4)) if state["ready"] else h.send(b"", status=404)
        rows = [f"{server.base}/a.jpg,0", f"{server.base}/later.jpg,1", f"{server.base}/b.jpg,1"]
        (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
        options = CrawlOptions(threads=2, progress=False)
        first = crawl(tmp_path / "list.csv", tmp_path / "out", options)
        assert (first.ok_rows, first.failed_rows) == (2, {"http_error": 1})

        with pytest.raises(NoisekitError, match="already holds a crawl.*--resume"):
            crawl(tmp_path / "list.csv", tmp_path / "out", options)
        again = crawl(tmp_path / "list.csv", tmp_path / "out", CrawlOptions(threads=2, resume=True, progress=False))
        assert (again.fetched_urls, again.skipped_rows) == (0, 3) and sum(server.counts.values()) == 3

        state["ready"] = True
        retried = crawl(tmp_path / "list.csv", tmp_path / "out", CrawlOptions(retry_failed=True, progress=False))
        assert (retried.fetched_urls, retried.ok_rows) == (1, 3)
        assert server.counts == Counter({"/a.jpg": 1, "/b.jpg": 1, "/later.jpg": 2})

        frame = _frame(tmp_path / "out")
        (tmp_path / "out" / frame["path"].iloc[0]).unlink()  # a file deleted by hand is fetched again
        crawl(tmp_path / "list.csv", tmp_path / "out", CrawlOptions(resume=True, progress=False))
        assert server.counts["/a.jpg"] == 2
        _check_store(tmp_path / "out", _frame(tmp_path / "out"))

        other = tmp_path / "other.csv"
        other.write_text(f"{server.base}/c.jpg,0\n" * 3)
        with pytest.raises(NoisekitError, match=r"other\.csv:1: URL .* differs from row 0"):
            crawl(other, tmp_path / "out", CrawlOptions(resume=True, progress=False))


def test_journal_replay_ignores_a_torn_last_line(tmp_path: Path) -> None:
    with running() as server:
        (tmp_path / "list.csv").write_text(f"{server.base}/a.jpg,0\n{server.base}/b.jpg,1\n")
        crawl(tmp_path / "list.csv", tmp_path / "out", CrawlOptions(progress=False))
    out = tmp_path / "out"
    record = load_record(out)
    entry = {"rows": [1], "fetched_url": "http://x/b.jpg", **{k: record.columns[k][1] for k in record.columns}}
    entry["status"], entry["error"] = "http_error", "HTTP 503"
    (out / JOURNAL).write_text(json.dumps(entry) + "\n" + '{"rows": [0], "status": "timeo')
    replayed = load_record(out)
    assert replayed.status == ["ok", "http_error"] and replayed.columns["error"][1] == "HTTP 503"
    (out / JOURNAL).write_text("garbage\n" + json.dumps(entry) + "\n")
    with pytest.raises(NoisekitError, match=r"crawl\.journal\.jsonl:1: not a journal line"):
        load_record(out)


def test_input_formats_agree(tmp_path: Path) -> None:
    urls = ["http://127.0.0.1:9/a.jpg", "http://127.0.0.1:9/b,c.jpg", "http://127.0.0.1:9/d.jpg"]
    labels = [3, 0, 97]
    pairs = list(zip(urls, labels, strict=True))
    (tmp_path / "plain.csv").write_text(f'{urls[0]},3\n"{urls[1]}",0\n{urls[2]},97\n')
    (tmp_path / "header.csv").write_text(
        "id,url,label\n" + "".join(f'{i},"{u}",{k}\n' for i, (u, k) in enumerate(pairs))
    )
    (tmp_path / "header.tsv").write_text("label\turl\n" + "".join(f"{k}\t{u}\n" for u, k in pairs))
    (tmp_path / "list.jsonl").write_text("".join(json.dumps({"url": u, "label": k}) + "\n" for u, k in pairs))
    pq.write_table(pa.table({"url": urls, "label": labels}), tmp_path / "list.parquet")
    from noisekit.crawl.url_list import read_url_list

    for name in ("plain.csv", "header.csv", "header.tsv", "list.jsonl", "list.parquet"):
        got = read_url_list(tmp_path / name)
        assert (got.urls, got.labels) == (urls, labels), name
    (tmp_path / "names.csv").write_text("url\nhttp://x/1.jpg\n")
    assert read_url_list(tmp_path / "names.csv").labels == [None]
    (tmp_path / "text.csv").write_text("http://x/1.jpg,car\nhttp://x/2.jpg,7\n")
    assert read_url_list(tmp_path / "text.csv").labels == ["car", "7"]

    bad = {
        "fields.csv": ("http://x/1.jpg,1\nhttp://x/2.jpg,1,2\n", r"fields\.csv:2: expected url,label, got 3 fields"),
        "short.csv": ("a,url,label\n1,http://x\n", r"short\.csv:2: expected 3 fields like the header"),
        "obj.jsonl": ('{"url": "http://x"}\n["http://y"]\n', r"obj\.jsonl:2: expected an object with a string 'url'"),
        "json.jsonl": ('{"url": \n', r"json\.jsonl:1: not valid JSON"),
        "empty.csv": ("\n\n", r"empty\.csv: lists no URLs"),
        "list.xml": ("<x/>", r"list\.xml: unknown list format '\.xml'"),
    }
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(NoisekitError, match=message):
            read_url_list(tmp_path / name)
    pq.write_table(pa.table({"link": urls}), tmp_path / "nourl.parquet")
    with pytest.raises(NoisekitError, match=r"nourl\.parquet: has no 'url' column \(columns: link\)"):
        read_url_list(tmp_path / "nourl.parquet")


def test_cli_crawl(runner, tmp_path: Path) -> None:
    with running() as server:
        (tmp_path / "list.csv").write_text("http://127.0.0.1:1/a.jpg,0\nhttp://127.0.0.1:1/404,1\n")
        server.routes["/404"] = lambda h, n: h.send(b"", status=404)
        args = ["crawl", str(tmp_path / "list.csv"), "--out", str(tmp_path / "out"), "--threads", "2"]
        result = runner.invoke(app, [*args, "--url-rewrite", f"http://127.0.0.1:1={server.base}"])
        assert result.exit_code == 0, result.output
        assert "crawled 2 rows (2 URLs): 1 ok, 1 failed (http_error 1)" in result.output
        assert set(server.counts) == {"/a.jpg", "/404"}

        again = runner.invoke(app, args)
        assert again.exit_code == 2 and "error:" in again.output and "--resume" in again.output
        bad = runner.invoke(app, [*args, "--resume", "--url-rewrite", "nonsense"])
        assert bad.exit_code == 2 and "error: --url-rewrite 'nonsense': expected FROM=TO" in bad.output
        zero = runner.invoke(app, [*args, "--resume", "--threads", "0"])
        assert zero.exit_code == 2 and "error: --threads must be at least 1, got 0" in zero.output
        missing = runner.invoke(app, ["crawl", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o2")])
        assert missing.exit_code == 2 and "nope.csv does not exist" in missing.output


@pytest.mark.parametrize(("header", "sep"), [("link,label", ","), ("label\timage_url", "\t")])
def test_cli_refuses_a_header_without_url(runner, tmp_path: Path, header: str, sep: str) -> None:
    listing = tmp_path / ("list.csv" if sep == "," else "list.tsv")
    listing.write_text(f"{header}\n" + "".join(f"http://127.0.0.1:9/{k}.jpg{sep}{k}\n" for k in range(3)))
    out = tmp_path / "out"
    columns = ", ".join(header.split(sep))
    result = runner.invoke(app, ["crawl", str(listing), "--out", str(out)])
    one_line_error(result, f"{listing.name}:1: the first row is neither a header with a 'url' column", columns)
    assert not out.exists()  # the headerless authors' format is test_input_formats_agree's plain.csv


def test_cli_refuses_a_file_as_out(runner, tmp_path: Path) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text("http://127.0.0.1:9/a.jpg,0\n")
    taken = tmp_path / "taken"
    taken.write_text("mine\n")
    result = runner.invoke(app, ["crawl", str(listing), "--out", str(taken)])
    one_line_error(result, f"--out {taken} is a file; expected a folder")
    below = runner.invoke(app, ["crawl", str(listing), "--out", str(taken / "sub")])
    one_line_error(below, f"--out {taken / 'sub'}: cannot create the folder (Not a directory)")
    assert taken.read_text() == "mine\n" and sorted(p.name for p in tmp_path.iterdir()) == ["list.csv", "taken"]
