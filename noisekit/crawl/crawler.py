"""``noisekit crawl``: download an image list into a folder, robustly and resumably.

Architecture, after img2dataset's downloader:

1. Read the list (:mod:`noisekit.crawl.url_list`), apply ``--url-rewrite`` rules, group rows by URL: a URL listed under
   several labels is fetched once and its rows share the result.
2. A thread pool fetches the URLs (:func:`noisekit.crawl.fetch.fetch_image`): one requests Session per thread with
   urllib3 Retry (429 and 5xx, exponential backoff, Retry-After), (connect, read) timeouts, a byte cap, image
   verification, content-addressed storage; at most ``max_per_host`` requests to one host at a time. At most two
   URLs per worker are queued, so memory does not grow with the list.
3. The main thread alone records results (:mod:`noisekit.crawl.record`): a flushed journal line per URL, an atomic
   rewrite of ``crawl.parquet`` every few seconds and at the end, and the progress bar. Per-row failures are data
   (``status``, ``error``), never exceptions; the run ends with a one-line summary.

``resume`` skips rows already finished (ok or failed); ``retry_failed`` fetches the failed ones again. A run over a
folder that already holds a crawl needs one of the two, so a typo cannot silently mix two lists.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
import time
import urllib.request
import warnings
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from PIL import Image

from noisekit import __version__
from noisekit.crawl.fetch import DEFAULT_MAX_PIXELS, IMAGES, OK, Fetched, Limits, fetch_image, host_of
from noisekit.crawl.record import JOURNAL, RECORD, Journal, Record, load_record, new_meta
from noisekit.crawl.url_list import UrlList, read_url_list, rewrite
from noisekit.download import http_session
from noisekit.errors import NoisekitError
from noisekit.progress import progress

USER_AGENT = f"noisekit/{__version__} (research image-dataset crawler; python-requests)"
MAX_REDIRECTS = 10
LOCK = ".crawl.lock"


@dataclass(frozen=True)
class CrawlOptions:
    threads: int = 16
    timeout: float = 10.0  # seconds, connect and per read
    retries: int = 3
    max_bytes: int = 20 * 2**20
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_per_host: int = 16
    resume: bool = False
    retry_failed: bool = False
    url_rewrites: tuple[tuple[str, str], ...] = ()
    backoff: float = 0.5  # seconds; urllib3 sleeps backoff * 2**(n-1) before the n-th retry
    checkpoint_seconds: float = 5.0
    progress: bool = True

    def validate(self) -> None:
        for name, value, low in (
            ("threads", self.threads, 1),
            ("retries", self.retries, 0),
            ("max-bytes", self.max_bytes, 1),
            ("max-pixels", self.max_pixels, 1),
            ("max-per-host", self.max_per_host, 1),
        ):
            if value < low:
                raise NoisekitError(f"--{name} must be at least {low}, got {value}")
        if not self.timeout > 0:
            raise NoisekitError(f"--timeout must be a positive number of seconds, got {self.timeout}")
        if Image.MAX_IMAGE_PIXELS is not None and self.max_pixels > Image.MAX_IMAGE_PIXELS:
            raise NoisekitError(
                f"--max-pixels {self.max_pixels:,} exceeds PIL's own limit Image.MAX_IMAGE_PIXELS "
                f"({Image.MAX_IMAGE_PIXELS:,}); raise that first"
            )


@dataclass(frozen=True)
class CrawlSummary:
    record: Path
    rows: int
    urls: int
    ok_rows: int
    failed_rows: dict[str, int]  # rows per failure kind, over the whole record
    skipped_rows: int  # finished before this run
    fetched_urls: int  # this run
    ok_images: int  # this run
    bytes: int  # this run
    seconds: float
    pending_rows: int = 0

    @property
    def images_per_second(self) -> float:
        return self.ok_images / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        failed = sum(self.failed_rows.values())
        kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(self.failed_rows.items(), key=lambda kv: (-kv[1], kv[0])))
        return (
            f"crawled {self.rows:,} rows ({self.urls:,} URLs): {self.ok_rows:,} ok, {failed:,} failed"
            + (f" ({kinds})" if kinds else "")
            + (f", {self.pending_rows:,} pending" if self.pending_rows else "")
            + f"; this run fetched {self.fetched_urls:,} URLs ({self.skipped_rows:,} rows already done), "
            f"{self.bytes / 1e6:,.1f} MB in {self.seconds:.1f} s, {self.images_per_second:,.1f} images/s "
            f"-> {self.record}"
        )


class HostSlots:
    """At most ``limit`` requests in flight per host."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, host: str) -> Iterator[None]:
        with self._lock:
            slot = self._slots.setdefault(host, threading.BoundedSemaphore(self.limit))
        with slot:
            yield


class Sessions:
    """One requests Session per worker thread (Sessions are not thread-safe), all closed at the end."""

    def __init__(self, options: CrawlOptions) -> None:
        self.options = options
        self._local = threading.local()
        self._all: list[requests.Session] = []
        self._lock = threading.Lock()
        self.proxies = urllib.request.getproxies()

    def get(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = http_session(retries=self.options.retries, backoff=self.options.backoff, user_agent=USER_AGENT)
            session.max_redirects = MAX_REDIRECTS
            if not self.proxies:  # requests would rescan the environment for proxies on every request (~0.5 ms)
                session.trust_env = False
                session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
            self._local.session = session
            with self._lock:
                self._all.append(session)
        return session

    def close(self) -> None:
        for session in self._all:
            session.close()


@contextmanager
def _exclusive(out: Path) -> Iterator[None]:
    """Refuse to run two crawls into one folder at once (POSIX advisory lock, released even on SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    with (out / LOCK).open("a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise NoisekitError(f"{out}: another crawl is writing into this folder") from None
        yield


def _open_record(items: UrlList, out: Path, fetch_urls: list[str], options: CrawlOptions) -> Record:
    if not ((out / RECORD).exists() or (out / JOURNAL).exists()):
        return Record.new(items.urls, items.labels, new_meta(items.source, options.url_rewrites))
    if not (options.resume or options.retry_failed):
        raise NoisekitError(f"{out} already holds a crawl ({RECORD}); pass --resume or --retry-failed, or a new --out")
    record = load_record(out)
    if len(record) != len(items):
        raise NoisekitError(f"{out / RECORD} has {len(record):,} rows but {items.source} lists {len(items):,}")
    for row, (had, url) in enumerate(zip(record.columns["url"], items.urls, strict=True)):
        if had != url:
            raise NoisekitError(f"{items.where[row]}: URL {url[:80]!r} differs from row {row} of {out / RECORD}")
    record.columns["label"] = list(items.labels)
    record.meta = new_meta(items.source, options.url_rewrites)
    for row, status in enumerate(record.status):
        if status is None:
            record.columns["fetched_url"][row] = fetch_urls[row]
        elif status == OK and not (out / record.columns["path"][row]).is_file():
            record.clear([row])  # the file is gone (deleted by hand?): fetch it again
            record.columns["fetched_url"][row] = fetch_urls[row]
    return record


def _remove_debris(out: Path, record: Record) -> None:
    """Temporary files of a killed run; and, once every row is finished, stored files no ok row refers to."""
    for tmp in [*out.glob(f".{RECORD}.*.tmp"), *(out / IMAGES).glob("*/.*.tmp")]:
        tmp.unlink(missing_ok=True)
    if any(s is None for s in record.status):
        return
    kept = {p for p, s in zip(record.columns["path"], record.status, strict=True) if s == OK}
    for path in (out / IMAGES).glob("*/*"):
        rel = f"{IMAGES}/{path.parent.name}/{path.name}"
        if path.is_file() and not path.name.startswith(".") and len(path.stem) == 64 and rel not in kept:
            path.unlink()


def _groups(record: Record, fetch_urls: list[str], retry_failed: bool) -> dict[str, list[int]]:
    """Rows still to fetch, grouped by the URL to fetch (in order of first appearance)."""
    groups: dict[str, list[int]] = {}
    for row, status in enumerate(record.status):
        if status is None or (retry_failed and status != OK):
            groups.setdefault(fetch_urls[row], []).append(row)
    return groups


def crawl(source: Path, out: Path, options: CrawlOptions = CrawlOptions()) -> CrawlSummary:
    """Fetch every URL of the list ``source`` into ``out``; return the summary (the record is ``out/crawl.parquet``)."""
    start = time.perf_counter()
    options.validate()
    items = read_url_list(source)
    fetch_urls = [rewrite(u, options.url_rewrites) for u in items.urls]
    if out.exists() and not out.is_dir():
        raise NoisekitError(f"--out {out} is a file; expected a folder for the images and the record")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file where a parent folder should be, no permission
        raise NoisekitError(f"--out {out}: cannot create the folder ({exc.strerror})") from None
    with _exclusive(out):
        record = _open_record(items, out, fetch_urls, options)
        _remove_debris(out, record)
        groups = _groups(record, fetch_urls, options.retry_failed)
        skipped = len(record) - sum(len(rows) for rows in groups.values())
        record.write(out)  # the journal's lines are now in the Parquet file
        (out / JOURNAL).unlink(missing_ok=True)
        with warnings.catch_warnings():  # PIL warns about a big image before our own pixel check: make it a row error
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            stats = _run(groups, record, out, options)  # writes the record at its end, whatever happens
        _remove_debris(out, record)
    counts = Counter(record.status)
    return CrawlSummary(
        record=out / RECORD,
        rows=len(record),
        urls=len(set(fetch_urls)),
        ok_rows=counts.pop(OK, 0),
        pending_rows=counts.pop(None, 0),
        failed_rows=dict(counts),
        skipped_rows=skipped,
        fetched_urls=stats["fetched"],
        ok_images=stats["ok"],
        bytes=stats["bytes"],
        seconds=time.perf_counter() - start,
    )


def _run(groups: dict[str, list[int]], record: Record, out: Path, options: CrawlOptions) -> Counter[str]:
    """Fetch ``groups`` with a bounded thread pool; the calling thread records every result as it arrives."""
    limits = Limits(options.timeout, options.max_bytes, options.max_pixels)
    Image.init()  # register every format plugin now: PIL's lazy registration is not thread-safe
    sessions, slots, stats = Sessions(options), HostSlots(options.max_per_host), Counter[str]()

    def work(url: str) -> Fetched:
        host = host_of(url)
        if host is None:  # refused without any network access
            return fetch_image(sessions.get(), url, out, limits)
        with slots.hold(host):
            return fetch_image(sessions.get(), url, out, limits)

    todo = iter(groups)
    done: queue.SimpleQueue[tuple[str, Future[Fetched]]] = queue.SimpleQueue()
    journal = Journal(out)
    bar = progress(total=sum(map(len, groups.values())), unit="row", desc="crawl", disable=not options.progress)
    pool = ThreadPoolExecutor(options.threads, thread_name_prefix="noisekit-crawl")
    in_flight, last_checkpoint = 0, time.monotonic()

    def submit(url: str) -> None:
        future = pool.submit(work, url)
        future.add_done_callback(lambda f: done.put((url, f)))

    try:
        for url in itertools.islice(todo, 2 * options.threads):  # a bounded queue: memory does not grow with the list
            submit(url)
            in_flight += 1
        while in_flight:
            url, future = done.get()
            in_flight -= 1
            if (following := next(todo, None)) is not None:
                submit(following)
                in_flight += 1
            result = future.result()  # only an environment failure (disk full) raises here
            rows = groups[url]
            record.set(rows, url, result)
            journal.append(rows, url, result)
            stats["fetched"] += 1
            stats["ok" if result.status == OK else "failed"] += 1
            stats["bytes"] += result.bytes or 0
            bar.update(len(rows))
            if time.monotonic() - last_checkpoint >= options.checkpoint_seconds:
                bar.set_postfix(ok=stats["ok"], failed=stats["failed"])
                record.write(out)
                journal.truncate()
                last_checkpoint = time.monotonic()
    except KeyboardInterrupt:
        raise NoisekitError(
            f"interrupted after {stats['fetched']:,} URLs; what finished is recorded in {out / RECORD}; "
            "rerun with --resume to continue"
        ) from None
    except OSError as exc:
        raise NoisekitError(f"cannot write under {out}: {exc}") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        record.write(out)
        journal.close(remove=True)
        bar.set_postfix(ok=stats["ok"], failed=stats["failed"])
        bar.close()
        sessions.close()
    return stats
