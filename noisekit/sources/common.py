"""What every builder shares: checking the raw layout, parsing metadata files with file:line errors, missing
images, and the result type."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, ManifestMeta, make_frame


@dataclass
class BuildResult:
    """A built manifest plus what the builder had to leave out (listed images absent on disk).

    ``reports[name]`` is written beside the manifest as ``<stem>.<name>.json`` (e.g. ``clean.leakage.json``).
    """

    manifest: Manifest
    missing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reports: dict[str, dict] = field(default_factory=dict)


def require_dir(path: Path, *, what: str) -> Path:
    if not path.is_dir():
        raise NoisekitError(f"{what} {path} does not exist or is not a folder")
    return path


def require_file(path: Path, *, dataset: str) -> Path:
    if not path.is_file():
        raise NoisekitError(f"{dataset}: metadata file {path} is missing")
    return path


def decode_line(raw: bytes, *, path: Path, number: int) -> str:
    """One line of a UTF-8 text list; a byte that is not UTF-8 is an error naming the file, line and column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoisekitError(
            f"{path}:{number}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
            "save the file as UTF-8"
        ) from None


def read_rows(
    path: Path,
    *,
    fields: int,
    sep: str | None = None,
    header: Sequence[str] | None = None,
    maxsplit: int | None = None,
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a text table; a line with the wrong field count is an error naming it.

    ``sep=None`` splits on whitespace. ``header``, when given, must be the first line's fields exactly.
    ``maxsplit`` lets the last field contain the separator (file names with spaces).
    """
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            line = decode_line(raw, path=path, number=number).rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(sep, maxsplit if maxsplit is not None else -1)
            if number == 1 and header is not None:
                if [p.strip() for p in parts] != list(header):
                    raise NoisekitError(f"{path}:1: expected header {' '.join(header)!r}, got {line[:80]!r}")
                continue
            if len(parts) != fields:
                raise NoisekitError(f"{path}:{number}: expected {fields} fields, got {len(parts)}: {line[:80]!r}")
            yield number, parts


def parse_int(value: str, *, path: Path, number: int, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise NoisekitError(f"{path}:{number}: {what} {value!r} is not an integer") from None


def drop_missing(
    frame: pd.DataFrame, resolve: Callable[[str], Path], *, strict: bool, dataset: str
) -> tuple[pd.DataFrame, list[str]]:
    """Remove rows whose image is absent; with ``strict`` an absent image is an error instead."""
    present = [resolve(p).is_file() for p in frame["path"]]
    missing = [p for p, ok in zip(frame["path"], present, strict=True) if not ok]
    if missing and strict:
        raise NoisekitError(
            f"{dataset}: {len(missing)} listed image(s) are absent, first {resolve(missing[0])} (--strict)"
        )
    return frame[present].reset_index(drop=True), missing


def assemble(
    *,
    dataset: str,
    root: Path,
    rows: list[tuple[str, str, str, int]],
    class_names: Sequence[str],
    strict: bool,
    roots: dict[str, str] | None = None,
    source: dict | None = None,
    is_noisy: list[bool | None] | None = None,
    label: list[int] | None = None,
) -> BuildResult:
    """Rows of (image_id, path, split, clean_label) -> a validated-shape manifest with absent images dropped."""
    if not rows:
        raise NoisekitError(f"{dataset}: the metadata under {root} lists no images")
    ids, paths, splits, clean = (list(col) for col in zip(*rows, strict=True))
    frame = make_frame(ids, paths, splits, clean, label=label, is_noisy=is_noisy)
    dup = frame["image_id"].duplicated()
    if dup.any():
        raise NoisekitError(f"{dataset}: image id {frame['image_id'][dup].iloc[0]!r} is listed twice")
    meta = ManifestMeta(
        dataset=dataset,
        root=str(root.resolve()),
        class_names=tuple(class_names),
        roots={k: str(Path(v).resolve()) for k, v in (roots or {}).items()},
        source=source or {},
    )
    manifest = Manifest(frame, meta)
    frame, missing = drop_missing(frame, manifest.resolve, strict=strict, dataset=dataset)
    return BuildResult(manifest.replace(frame), missing)
