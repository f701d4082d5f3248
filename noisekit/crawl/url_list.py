"""The list a crawl starts from: one row per (url, label), read from whichever format the user has.

Formats, by extension:
- ``.csv`` / ``.txt`` (comma) and ``.tsv`` (tab). The first row is a header exactly when one of its fields is
  ``url``; otherwise the file is headerless ``url,label`` (the PRISM authors' CARS-98N format) and its first row
  is data, so its first field must be a URL (scheme and host): a header without a ``url`` column is an error. With
  a header, ``url`` is required and ``label`` optional; other columns are ignored.
- ``.jsonl`` / ``.ndjson``: one object per line with ``url`` and optionally ``label``.
- ``.parquet``: columns ``url`` and optionally ``label``.

A malformed file is a :class:`NoisekitError` naming the file and line; a malformed *URL* is not: it becomes a row
that the crawler records as failed, so one bad row never stops a list of thousands.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from noisekit.errors import NoisekitError

SUFFIXES = (".csv", ".txt", ".tsv", ".jsonl", ".ndjson", ".parquet")

Label = int | str | None


@dataclass(frozen=True)
class UrlList:
    """``urls[i]`` and ``labels[i]`` of input row i (0-based, header excluded); ``where[i]`` names its line."""

    source: Path
    urls: list[str]
    labels: list[Label]
    where: list[str]

    def __len__(self) -> int:
        return len(self.urls)


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _labels(raw: list[object]) -> list[Label]:
    """Integer labels when every present label is an integer (``"3"`` counts), else strings; missing -> None."""
    missing = [v is None or v == "" or v != v for v in raw]  # v != v: NaN
    ints = [None if gone else _as_int(v) for v, gone in zip(raw, missing, strict=True)]
    if all(gone or i is not None for i, gone in zip(ints, missing, strict=True)):
        return list(ints)
    return [None if gone else str(v) for v, gone in zip(raw, missing, strict=True)]


def _looks_like_url(field: str) -> bool:
    """A scheme and a host: what the first field of a headerless list holds and a header's first name does not."""
    parts = urlsplit(field.strip())
    return bool(parts.scheme and parts.netloc)


def _read_delimited(path: Path, sep: str) -> tuple[list[str], list[object], list[str]]:
    urls: list[str] = []
    labels: list[object] = []
    where: list[str] = []
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh, delimiter=sep)
        url_col = label_col = None
        width = 0
        for row in reader:
            line = reader.line_num
            if not any(field.strip() for field in row):
                continue
            if url_col is None and width == 0:
                names = [field.strip().lower() for field in row]
                if "url" in names:  # a header row
                    url_col, width = names.index("url"), len(names)
                    label_col = names.index("label") if "label" in names else None
                    continue
                if not _looks_like_url(row[0]):
                    # a header that misnames the column would otherwise turn every row into a failed bad_url
                    raise NoisekitError(
                        f"{path}:{line}: the first row is neither a header with a 'url' column nor a url,label row "
                        f"(columns found: {', '.join(names)}); name the URL column 'url'"
                    )
                url_col, label_col, width = 0, 1, -1  # headerless url[,label]
            if width == -1 and len(row) > 2:
                raise NoisekitError(f"{path}:{line}: expected url,label, got {len(row)} fields: {sep.join(row)[:80]!r}")
            if width > 0 and len(row) != width:
                raise NoisekitError(f"{path}:{line}: expected {width} fields like the header, got {len(row)}")
            urls.append(row[url_col].strip())
            labels.append(row[label_col].strip() if label_col is not None and label_col < len(row) else None)
            where.append(f"{path.name}:{line}")
    return urls, labels, where


def _read_jsonl(path: Path) -> tuple[list[str], list[object], list[str]]:
    urls: list[str] = []
    labels: list[object] = []
    where: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                raise NoisekitError(f"{path}:{line}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("url"), str):
                raise NoisekitError(f"{path}:{line}: expected an object with a string 'url', got {text.strip()[:80]!r}")
            urls.append(obj["url"].strip())
            labels.append(obj.get("label"))
            where.append(f"{path.name}:{line}")
    return urls, labels, where


def _read_parquet(path: Path) -> tuple[list[str], list[object], list[str]]:
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise NoisekitError(f"{path}: not a readable Parquet file ({exc})") from None
    if "url" not in table.column_names:
        raise NoisekitError(f"{path}: has no 'url' column (columns: {', '.join(table.column_names)})")
    urls = [(u or "").strip() for u in table.column("url").to_pylist()]
    labels = table.column("label").to_pylist() if "label" in table.column_names else [None] * len(urls)
    return urls, labels, [f"{path.name} row {i}" for i in range(len(urls))]


def read_url_list(path: Path) -> UrlList:
    """Read a crawl input list; raise :class:`NoisekitError` naming the file and line if it is malformed."""
    path = Path(path)
    if not path.is_file():
        raise NoisekitError(f"url list {path} does not exist")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        expected = ", ".join(SUFFIXES)
        raise NoisekitError(f"{path}: unknown list format {suffix or '(none)'!r}; expected one of {expected}")
    try:
        if suffix in (".jsonl", ".ndjson"):
            urls, raw, where = _read_jsonl(path)
        elif suffix == ".parquet":
            urls, raw, where = _read_parquet(path)
        else:
            urls, raw, where = _read_delimited(path, "\t" if suffix == ".tsv" else ",")
    except UnicodeDecodeError as exc:
        raise NoisekitError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not urls:
        raise NoisekitError(f"{path}: lists no URLs")
    return UrlList(path, urls, _labels(raw), where)


def parse_rewrite(spec: str) -> tuple[str, str]:
    """``FROM=TO`` (split at the first ``=``) -> (FROM, TO)."""
    old, sep, new = spec.partition("=")
    if not sep or not old:
        raise NoisekitError(f"--url-rewrite {spec!r}: expected FROM=TO with a non-empty FROM (e.g. 236x=736x)")
    return old, new


def rewrite(url: str, rules: tuple[tuple[str, str], ...]) -> str:
    """Apply each (FROM, TO) rule in order, replacing FROM's first occurrence."""
    for old, new in rules:
        url = url.replace(old, new, 1)
    return url
