"""Benchmark of ``noisekit crawl`` against img2dataset, run by hand (not by CI).

Both tools fetch the same images from the same local HTTP server with the same number of download threads, and
both verify every image by decoding it fully: noisekit with PIL (plus its byte, pixel and format checks), img2dataset
with OpenCV (``--resize_mode no --skip_reencode True``: decoded, not re-encoded). Each tool runs as its own command
line, as a user runs it, and is timed from start to exit; the figure is images stored per wall-clock second. The
tools alternate for ``--repeats`` rounds and the medians are compared.

The server runs in a process of its own (``bench/crawl.py --serve``) and serves, for every distinct URL path of the
PRISM authors' CARS-98N list, a Pinterest-thumbnail-sized JPEG (236 px wide): one of 32 generated pictures with the
path in a JPEG comment, so every body is distinct and costs the same to decode.

img2dataset is not a project dependency: install it in a separate environment (it pins pandas < 3, which would
downgrade this project's pandas) and pass its executable:

    python -m venv /path/to/i2d && /path/to/i2d/bin/pip install img2dataset
    .venv/bin/python bench/crawl.py --img2dataset /path/to/i2d/bin/img2dataset [--threads 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

LIST = Path(__file__).resolve().parents[1] / "tests" / "data" / "prism-official" / "CARS_98N_list.csv"
PREFIX = "https://i.pinimg.com"


def thumbnails(n: int = 32) -> list[bytes]:
    """Photo-like 236 px wide JPEGs (smooth colour fields with noise), 236x236 to 236x354."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(n):
        height = 236 + 118 * k // n
        small = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize((236, height), Image.BICUBIC), dtype=np.int16)
        image = np.clip(image + rng.integers(-12, 13, image.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    bases: list[bytes] = []

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        base = self.bases[int.from_bytes(hashlib.sha256(self.path.encode()).digest()[:2], "big") % len(self.bases)]
        comment = self.path.encode()
        body = base[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + base[2:]
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def serve() -> None:
    Handler.bases = thumbnails()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


def distinct_rows(base: str, limit: int | None) -> list[tuple[str, str]]:
    """(local URL, label) for each distinct URL of the CARS-98N list, first label kept."""
    rows: dict[str, str] = {}
    for line in LIST.read_text().splitlines():
        url, label = line.rsplit(",", 1)
        rows.setdefault(url.replace(PREFIX, base, 1), label)
    return list(rows.items())[:limit]


def count_files(folder: Path, suffix: str) -> int:
    return sum(1 for p in folder.rglob(f"*{suffix}") if not p.name.startswith("."))


def run_noisekit(listing: Path, out: Path, workers: int) -> tuple[float, int, str]:
    cmd = [sys.executable, "-m", "noisekit", "crawl", str(listing), "--out", str(out), "--threads", str(workers)]
    cmd += ["--max-per-host", str(workers), "--retries", "0"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"TQDM_DISABLE": "1"})
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"noisekit crawl failed:\n{done.stderr[-2000:]}")
    return seconds, count_files(out / "images", ".jpg"), done.stdout.strip().splitlines()[-1]


def run_img2dataset(exe: str, listing: Path, out: Path, workers: int) -> tuple[float, int, str]:
    cmd = [exe, "--url_list", str(listing), "--input_format", "csv", "--url_col", "url", "--output_folder", str(out)]
    cmd += ["--output_format", "files", "--processes_count", "1", "--thread_count", str(workers)]
    cmd += ["--resize_mode", "no", "--skip_reencode", "True", "--extract_exif", "False", "--retries", "0"]
    cmd += ["--disallowed_header_directives", "[]", "--enable_wandb", "False"]
    env = os.environ | {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled"}  # no traffic beyond 127.0.0.1
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"img2dataset failed:\n{done.stderr[-2000:]}")
    own = re.findall(r"total .*images per sec: (\d+)", done.stdout)
    return seconds, count_files(out, ".jpg"), f"img2dataset's own figure: {own[-1] if own else '?'} images/s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--img2dataset", default=shutil.which("img2dataset"), help="img2dataset's executable")
    parser.add_argument("--threads", type=int, default=16, help="download threads, for both tools")
    parser.add_argument("--images", type=int, default=None, help="first N distinct URLs (default all 8,626)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None, help="folder for the outputs (default: the system's)")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    if not args.img2dataset:
        raise SystemExit("img2dataset not found: install it in a separate environment and pass --img2dataset EXE")

    server = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
    try:
        base = server.stdout.readline().strip() if server.stdout else ""
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            work = Path(tmp)
            rows = distinct_rows(base, args.images)
            (work / "list.csv").write_text("".join(f"{u},{label}\n" for u, label in rows))  # noisekit: headerless
            (work / "list_i2d.csv").write_text("url,label\n" + "".join(f"{u},{label}\n" for u, label in rows))
            times: dict[str, list[float]] = {"noisekit": [], "img2dataset": []}
            for round_ in range(args.repeats):
                for tool in ("noisekit", "img2dataset"):
                    out = work / f"{tool}-{round_}"
                    if tool == "noisekit":
                        seconds, stored, note = run_noisekit(work / "list.csv", out, args.threads)
                    else:
                        listing = work / "list_i2d.csv"
                        seconds, stored, note = run_img2dataset(args.img2dataset, listing, out, args.threads)
                    if stored != len(rows):
                        raise SystemExit(f"{tool} stored {stored} of {len(rows)} images")
                    times[tool].append(seconds)
                    rate = len(rows) / seconds
                    print(f"round {round_ + 1} {tool:<11} {seconds:6.2f} s {rate:7.1f} images/s ({note})")
                    shutil.rmtree(out)
    finally:
        server.kill()
    rate = {tool: len(rows) / statistics.median(ts) for tool, ts in times.items()}
    print(
        f"{len(rows):,} images, {args.threads} workers, median of {args.repeats}: noisekit {rate['noisekit']:.1f} "
        f"images/s, img2dataset {rate['img2dataset']:.1f} images/s, ratio noisekit/img2dataset "
        f"{rate['noisekit'] / rate['img2dataset']:.2f}"
    )


if __name__ == "__main__":
    main()
