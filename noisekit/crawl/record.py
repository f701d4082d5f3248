"""What a crawl knows about every input row: ``OUT/crawl.parquet``, plus a journal that makes it crash-safe.

One record row per input row (in input order), columns :data:`COLUMNS`. ``status`` is null while the row is
pending, else ``ok`` or the kind of failure (see :mod:`noisekit.crawl.fetch`) with ``error`` saying why; ``path`` is the
stored image's path relative to the output folder.

Crash safety: the Parquet file is only ever replaced whole (temporary file + rename). Between two such checkpoints
each finished URL is appended to ``OUT/crawl.journal.jsonl`` as one flushed JSON line, so a SIGKILL loses at most
the results that had not been written yet. :func:`load_record` reads the Parquet file and replays the journal over
it; a torn last line (the process died mid-write) is ignored, and replaying twice changes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from noisekit import __version__
from noisekit.crawl.fetch import KINDS, Fetched
from noisekit.errors import NoisekitError
from noisekit.manifest import atomic_path, read_parquet

RECORD = "crawl.parquet"
JOURNAL = "crawl.journal.jsonl"
META_KEY = b"noisekit_crawl"
RESULT = ("status", "error", "http_status", "sha256", "width", "height", "bytes", "format", "path")
COLUMNS = ("row", "url", "label", "fetched_url", *RESULT)
STRINGS = ("url", "fetched_url", "status", "error", "sha256", "format", "path")
INTEGERS = ("row", "http_status", "width", "height", "bytes")


def _fields(result: Fetched) -> dict[str, Any]:
    return {name: getattr(result, name) for name in RESULT}


class Record:
    """The record in memory, as columns of Python lists (cheap to update one result at a time)."""

    def __init__(self, columns: dict[str, list[Any]], meta: dict[str, Any]) -> None:
        self.columns = columns
        self.meta = meta

    @classmethod
    def new(cls, urls: list[str], labels: list[Any], meta: dict[str, Any]) -> Record:
        n = len(urls)
        columns: dict[str, list[Any]] = {"row": list(range(n)), "url": list(urls), "label": list(labels)}
        columns["fetched_url"] = list(urls)
        for name in RESULT:
            columns[name] = [None] * n
        return cls(columns, meta)

    def __len__(self) -> int:
        return len(self.columns["row"])

    @property
    def status(self) -> list[str | None]:
        return self.columns["status"]

    def set(self, rows: list[int], fetched_url: str, result: Fetched | dict[str, Any]) -> None:
        values = result if isinstance(result, dict) else _fields(result)
        for row in rows:
            self.columns["fetched_url"][row] = fetched_url
            for name in RESULT:
                self.columns[name][row] = values.get(name)

    def clear(self, rows: list[int]) -> None:
        for row in rows:
            for name in RESULT:
                self.columns[name][row] = None

    def table(self) -> pa.Table:
        labels = self.columns["label"]
        label_type = pa.int64() if all(v is None or isinstance(v, int) for v in labels) else pa.string()
        if label_type == pa.string():
            labels = [None if v is None else str(v) for v in labels]
        arrays = {"label": pa.array(labels, type=label_type)}
        arrays |= {c: pa.array(self.columns[c], type=pa.string()) for c in STRINGS}
        arrays |= {c: pa.array(self.columns[c], type=pa.int64()) for c in INTEGERS}
        table = pa.table({c: arrays[c] for c in COLUMNS})
        return table.replace_schema_metadata({META_KEY: json.dumps(self.meta, sort_keys=True).encode()})

    def frame(self) -> pd.DataFrame:
        return self.table().replace_schema_metadata(None).to_pandas(types_mapper=_nullable)

    def write(self, out: Path) -> Path:
        target = out / RECORD
        with atomic_path(target) as tmp:
            pq.write_table(self.table(), tmp, compression="zstd")
        return target


def _nullable(dtype: pa.DataType) -> Any:
    return pd.Int64Dtype() if pa.types.is_integer(dtype) else None


class Journal:
    """Append-only lines of finished URLs; flushed after each, truncated after each checkpoint."""

    def __init__(self, out: Path) -> None:
        self.path = out / JOURNAL
        self._fh: TextIO = self.path.open("a", encoding="utf-8")

    def append(self, rows: list[int], fetched_url: str, result: Fetched) -> None:
        entry = {"rows": rows, "fetched_url": fetched_url, **_fields(result)}
        line = json.dumps(entry, separators=(",", ":"))
        self._fh.write(line + "\n")
        self._fh.flush()

    def truncate(self) -> None:
        self._fh.truncate(0)

    def close(self, *, remove: bool) -> None:
        self._fh.close()
        if remove:
            self.path.unlink(missing_ok=True)


def _replay(record: Record, path: Path) -> int:
    """Apply the journal's lines to ``record``; return how many lines were applied."""
    applied = 0
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the last line, torn by a kill mid-write: its result is simply lost
                continue
            raise NoisekitError(f"{path}:{number}: not a journal line; start the crawl in a new folder") from None
        rows = entry.get("rows")
        if entry.get("status") not in KINDS or not rows or not all(0 <= r < len(record) for r in rows):
            raise NoisekitError(f"{path}:{number}: rows or status do not fit {path.parent / RECORD}")
        record.set(rows, entry["fetched_url"], entry)
        applied += 1
    return applied


def load_record(out: Path) -> Record:
    """The record of the crawl in ``out`` (its Parquet file with the journal replayed over it)."""
    path = out / RECORD
    if not path.is_file():
        raise NoisekitError(f"{out} holds no {RECORD}; is it a folder `noisekit crawl --out` wrote?")
    table = read_parquet(path, what="crawl record")
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise NoisekitError(f"{path}: missing column(s) {', '.join(missing)}; not a noisekit crawl record")
    raw = (table.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    record = Record({c: table.column(c).to_pylist() for c in COLUMNS}, meta)
    if record.columns["row"] != list(range(len(record))):
        raise NoisekitError(f"{path}: rows are not 0..{len(record) - 1} in order; not a noisekit crawl record")
    if (out / JOURNAL).is_file():
        _replay(record, out / JOURNAL)
    return record


def new_meta(source: Path, rewrites: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    return {"source": source.name, "url_rewrites": [list(r) for r in rewrites], "tool_version": __version__}
