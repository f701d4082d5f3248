"""The Manifest: the one contract between noisekit and prism.

A Manifest is a table with one row per image (columns below) plus metadata. On disk it is one Parquet file whose
key-value metadata holds the JSON-encoded :class:`ManifestMeta`; the same inputs and seed give a byte-identical
file (nothing time-dependent goes into it). A sidecar ``<stem>.json`` beside it records when and by what it was
written, for people.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from noisekit import __version__
from noisekit.errors import NoisekitError

SPLITS = ("train", "val", "test")
META_KEY = b"noisekit"

SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("path", pa.string()),
        ("split", pa.string()),
        ("clean_label", pa.int64()),
        ("label", pa.int64()),
        ("is_noisy", pa.bool_()),
    ]
)
COLUMNS = tuple(SCHEMA.names)


@dataclass(frozen=True)
class ManifestMeta:
    """What a manifest says about itself.

    ``class_names[k]`` names clean label k; ``label_names[k]`` names training label k (the two differ only when a
    noise model re-indexes the training labels, as Small Cluster does). ``roots`` maps a path's first component
    to a further folder, for datasets assembled from two sources (Food-101N + Food-101, a crawl + CARS196);
    every other path is relative to ``root``.
    """

    dataset: str
    root: str
    class_names: tuple[str, ...]
    label_names: tuple[str, ...] | None = None
    variant: str = "clean"
    roots: dict[str, str] = field(default_factory=dict)
    noise: dict[str, Any] | None = None
    source: dict[str, Any] = field(default_factory=dict)
    tool_version: str = __version__

    @property
    def labels(self) -> tuple[str, ...]:
        return self.label_names if self.label_names is not None else self.class_names

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ManifestMeta:
        raw = json.loads(text)
        raw["class_names"] = tuple(raw["class_names"])
        if raw.get("label_names") is not None:
            raw["label_names"] = tuple(raw["label_names"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


@dataclass
class Manifest:
    """A table of images (``frame``, columns :data:`COLUMNS` plus optional extras) and its metadata."""

    frame: pd.DataFrame
    meta: ManifestMeta

    def __len__(self) -> int:
        return len(self.frame)

    def split(self, name: str) -> pd.DataFrame:
        return self.frame[self.frame["split"] == name]

    def resolve(self, path: str) -> Path:
        """The absolute location of a manifest ``path``."""
        head, _, rest = path.partition("/")
        if head in self.meta.roots and rest:
            return Path(self.meta.roots[head]) / rest
        return Path(self.meta.root) / path

    def counts(self) -> dict[str, dict[str, int]]:
        """Images and classes per split, as ``noisekit info`` reports them."""
        out: dict[str, dict[str, int]] = {"splits": {}, "classes": {}}
        for name in SPLITS:
            part = self.split(name)
            if len(part) or name != "val":
                out["splits"][name] = int(len(part))
                out["classes"][name] = int(part["label"].nunique())
        return out

    def replace(self, frame: pd.DataFrame | None = None, **meta: Any) -> Manifest:
        return Manifest(self.frame if frame is None else frame, dataclasses.replace(self.meta, **meta))


def make_frame(
    image_id: list[str] | np.ndarray,
    path: list[str] | np.ndarray,
    split: list[str] | np.ndarray,
    clean_label: list[int] | np.ndarray,
    label: list[int] | np.ndarray | None = None,
    is_noisy: list[bool | None] | np.ndarray | None = None,
) -> pd.DataFrame:
    """A manifest frame with the right dtypes; ``label`` defaults to ``clean_label`` (a clean manifest)."""
    clean = np.asarray(clean_label, dtype=np.int64)
    lab = clean.copy() if label is None else np.asarray(label, dtype=np.int64)
    if is_noisy is None:
        noisy = pd.array(np.where(clean >= 0, lab != clean, False), dtype="boolean")
        noisy[clean < 0] = pd.NA
    else:
        noisy = pd.array(is_noisy, dtype="boolean")
    return pd.DataFrame(
        {
            "image_id": pd.array(image_id, dtype=object),
            "path": pd.array(path, dtype=object),
            "split": pd.array(split, dtype=object),
            "clean_label": clean,
            "label": lab,
            "is_noisy": noisy,
        }
    )


INSIDE = "must be relative to the dataset root and stay inside it"


def escapes(path: str) -> bool:
    """Whether a manifest path may lead out of its root: empty, absolute, through ``..``, or with a backslash (a
    Windows separator). Links that lead out are :func:`check_inside`'s to find."""
    pure = PurePosixPath(path)
    return not path or pure.is_absolute() or ".." in pure.parts or "\\" in path


def _fail(where: str, message: str) -> None:
    raise NoisekitError(f"{where}: {message}")


def validate(manifest: Manifest, *, where: str = "manifest") -> None:
    """Check the contract of design.md; raise :class:`NoisekitError` naming the first offending row."""
    df, meta = manifest.frame, manifest.meta
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        _fail(where, f"missing column(s) {', '.join(missing)}")
    if not meta.class_names:
        _fail(where, "metadata has no class names")
    _check_types(df, where)

    dup = df["image_id"].duplicated(keep=False)
    if dup.any():
        ids = df.loc[dup, "image_id"]
        _fail(where, f"duplicate image_id {ids.iloc[0]!r} ({int(dup.sum())} rows share an id)")

    bad_split = ~df["split"].isin(SPLITS)
    if bad_split.any():
        i = int(np.flatnonzero(bad_split)[0])
        _fail(where, f"row {i}: split {df['split'].iloc[i]!r} is not one of {', '.join(SPLITS)}")

    n_labels, n_classes = len(meta.labels), len(meta.class_names)
    bad = (df["label"] < 0) | (df["label"] >= n_labels)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail(where, f"row {i}: label {df['label'].iloc[i]} is outside [0, {n_labels})")
    bad = (df["clean_label"] < -1) | (df["clean_label"] >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        _fail(where, f"row {i}: clean_label {df['clean_label'].iloc[i]} is outside [-1, {n_classes})")

    for i, p in enumerate(df["path"]):
        if escapes(p):
            _fail(where, f"row {i}: path {p!r} {INSIDE}")

    # is_noisy must agree with the labels wherever the clean label is known; labels are compared by class name
    # because a noise model may re-index the training labels.
    known = (df["clean_label"] >= 0).to_numpy()
    if known.any():
        label_names = np.asarray(meta.labels, dtype=object)
        class_names = np.asarray(meta.class_names, dtype=object)
        differs = label_names[df["label"].to_numpy()[known]] != class_names[df["clean_label"].to_numpy()[known]]
        flag = df["is_noisy"].to_numpy(dtype=object)[known]
        wrong = np.array([f is pd.NA or bool(f) != d for f, d in zip(flag, differs, strict=True)])
        if wrong.any():
            i = int(np.flatnonzero(known)[np.flatnonzero(wrong)[0]])
            _fail(where, f"row {i}: is_noisy={flag[np.flatnonzero(wrong)[0]]} disagrees with its labels")


def _check_types(df: pd.DataFrame, where: str) -> None:
    """The schema's dtypes: integer labels, string ids, paths and splits, a boolean (or missing) is_noisy."""
    for column in ("clean_label", "label"):
        if not pd.api.types.is_integer_dtype(df[column]):
            _fail(where, f"column {column} must hold integers, got dtype {df[column].dtype}")
    for column in ("image_id", "path", "split"):
        bad = ~df[column].map(lambda v: isinstance(v, str)).to_numpy(dtype=bool)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            _fail(where, f"row {i}: {column} {df[column].iloc[i]!r} is not a string")
    flags = df["is_noisy"]
    if not pd.api.types.is_bool_dtype(flags):
        _fail(where, f"column is_noisy must hold booleans (or nulls), got dtype {flags.dtype}")


def check_inside(manifest: Manifest, *, where: str = "manifest") -> None:
    """Every row's file, after resolving symbolic links, lies inside the root its path names.

    :func:`validate` already refuses absolute paths and ``..``; this catches a link inside the root that points out
    of it. Directories are resolved once each (one ``lstat`` per file on top), so a 120k-image manifest costs well
    under a second.
    """
    real_roots: dict[str, str] = {}
    real_dirs: dict[str, str] = {}
    for i, rel in enumerate(manifest.frame["path"]):
        head, _, rest = rel.partition("/")
        base = manifest.meta.roots[head] if head in manifest.meta.roots and rest else manifest.meta.root
        real_base = real_roots.setdefault(base, os.path.realpath(base))
        target = str(manifest.resolve(rel))
        parent = os.path.dirname(target)
        if parent not in real_dirs:
            real_dirs[parent] = os.path.realpath(parent)
        real = os.path.join(real_dirs[parent], os.path.basename(target))
        if os.path.islink(real):
            real = os.path.realpath(real)
        if real != real_base and not real.startswith(real_base.rstrip(os.sep) + os.sep):
            _fail(
                where,
                f"row {i}: path {rel!r} leads outside the dataset root {base} (to {real}); link the root folder "
                "itself, not what is inside it",
            )


def temp_beside(target: Path, *, directory: bool = False) -> Path:
    """Create an empty temporary file (or folder) with a fresh name beside ``target``.

    Unlike ``tempfile.mkstemp``/``mkdtemp`` (always 0600/0700), it is created with the mode the umask gives any new
    file or folder, so what is renamed onto ``target`` is as readable as a file written in place would be."""
    while True:
        path = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            if directory:
                os.mkdir(path, 0o777)
            else:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # another writer drew the same name: draw again
            continue
        return path


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(temp_beside(target))
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, payload: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def to_table(manifest: Manifest) -> pa.Table:
    extras = [c for c in manifest.frame.columns if c not in COLUMNS]
    table = pa.Table.from_pandas(manifest.frame[list(COLUMNS) + extras], preserve_index=False)
    table = table.cast(pa.schema(list(SCHEMA) + [table.schema.field(c) for c in extras]))
    return table.replace_schema_metadata({META_KEY: manifest.meta.to_json().encode()})


def same_content(a: Manifest, b: Manifest) -> bool:
    """The same rows, labels and metadata; only the version of the tool that wrote them may differ."""
    meta_a, meta_b = (dataclasses.replace(m.meta, tool_version="") for m in (a, b))
    # compared as read back: a nullable integer column (cars98n's width) comes back from Parquet as float
    frame_a, frame_b = (to_table(m).replace_schema_metadata(None).to_pandas() for m in (a, b))
    return meta_a == meta_b and frame_a.equals(frame_b)


def _describe(manifest: Manifest) -> str:
    noise = manifest.meta.noise or {}
    said = [
        f"{k} {noise[key]}"
        for k, key in (("model", "model"), ("rate", "requested_rate"), ("seed", "seed"))
        if key in noise
    ]
    return f" ({', '.join(said)})" if said else ""


def write_manifest(manifest: Manifest, path: Path, *, overwrite: bool = True) -> Path:
    """Validate, then write atomically: either the whole manifest is there or the old file is untouched.

    With ``overwrite=False`` an existing manifest is replaced only by the same content (then nothing changes): a
    variant may already be published or trained on, so other content needs the user's ``--overwrite``.
    """
    validate(manifest, where=str(path))
    if not overwrite and path.is_file():
        try:
            old: Manifest | None = read_manifest(path, check_links=False)
        except NoisekitError:
            old = None
        if old is None or not same_content(old, manifest):
            was = "an unreadable manifest" if old is None else f"other content{_describe(old)}"
            raise NoisekitError(
                f"{path} exists with {was}; pass --overwrite to replace it (or write a new variant with --variant)"
            )
    with atomic_path(path) as tmp:
        pq.write_table(to_table(manifest), tmp, compression="zstd")
    write_json(
        path.with_suffix(".json"),
        {"meta": json.loads(manifest.meta.to_json()), "rows": len(manifest), "written_at": time.time()},
    )
    return path


def read_parquet(path: Path, *, what: str) -> pa.Table:
    """A Parquet file as a table, or a one-line error naming the file and what it should have been."""
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise NoisekitError(f"{path}: not a readable Parquet {what} ({exc})") from None


def _meta(raw: bytes, path: Path) -> ManifestMeta:
    try:
        meta = ManifestMeta.from_json(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise NoisekitError(
            f"{path}: its noisekit metadata is not a manifest's (missing or malformed {exc}); a published shard is "
            "read through its folder: DIR/CONFIG"
        ) from None
    if not isinstance(meta.root, str) or not all(isinstance(v, str) for v in meta.roots.values()):
        raise NoisekitError(f"{path}: its metadata's root and roots must be folder names")
    return meta


def read_manifest(path: Path | str, *, check_links: bool = True) -> Manifest:
    """Read and check a manifest: the whole contract of :func:`validate`, and (``check_links``) that no row's file
    leads outside its root through a symbolic link. Nothing read is trusted; the error names the file and row."""
    path = Path(path)
    if not path.is_file():
        raise NoisekitError(f"manifest {path} does not exist")
    table = read_parquet(path, what="manifest")
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise NoisekitError(f"{path}: Parquet file has no noisekit metadata; is it a noisekit manifest?")
    meta = _meta(raw, path)
    for expected in SCHEMA:
        if expected.name not in table.schema.names:
            raise NoisekitError(f"{path}: missing column {expected.name} (a manifest has {', '.join(COLUMNS)})")
        actual = table.schema.field(expected.name).type
        if not actual.equals(expected.type):
            raise NoisekitError(f"{path}: column {expected.name} has type {actual}, expected {expected.type}")
    frame = table.replace_schema_metadata(None).to_pandas()
    frame["is_noisy"] = frame["is_noisy"].astype("boolean")
    manifest = Manifest(frame, meta)
    validate(manifest, where=str(path))
    if check_links:
        check_inside(manifest, where=str(path))
    return manifest
