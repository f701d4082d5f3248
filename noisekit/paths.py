"""Where manifests live: ``$NOISEKIT_HOME`` (default ``~/.cache/noisekit``), as ``NAME/VARIANT.parquet``."""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from noisekit.errors import NoisekitError, NotBuilt

CLEAN = "clean"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def data_home() -> Path:
    """The data home, created on first use."""
    home = Path(os.environ.get("NOISEKIT_HOME") or Path.home() / ".cache" / "noisekit").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def check_name(value: str, *, what: str) -> str:
    if not _NAME.match(value):
        raise NoisekitError(f"{what} {value!r} is not a valid name (letters, digits, '_', '-', '.')")
    return value


RESERVED = (CLEAN, "shared")  # the built manifest; the published folder of the shared test split


def check_variant(value: str, *, what: str = "--variant") -> str:
    """A name a noise model may write: a file name in the data home and a Hub configuration name, which replaces
    neither the clean manifest nor another variant's report or sidecar (``NAME.report.json``, ``NAME.json``)."""
    check_name(value, what=what)
    if value in RESERVED:
        raise NoisekitError(f"{what} {value!r} is reserved ({' and '.join(RESERVED)} name built data); choose another")
    if ".." in value or value.endswith(".") or ".report" in value or value.endswith((".json", ".parquet", ".png")):
        raise NoisekitError(
            f"{what} {value!r} would collide with another file of the data home (no '..', '.report', a trailing '.' "
            "or a file suffix); choose another"
        )
    if len(value) > 64:
        raise NoisekitError(f"{what} {value!r} is longer than 64 characters")
    return value


@contextmanager
def variant_lock(dataset: str, variant: str) -> Iterator[None]:
    """Hold an OS lock on one variant while its manifest, sidecar and report are written, so that two processes
    writing the same variant take turns (the second then meets the first one's files); released on exit or crash."""
    folder = data_home() / ".locks"  # beside the datasets, so that a dataset's folder holds only its data
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{check_name(dataset, what='dataset')}.{check_name(variant, what='variant')}.lock"
    with open(folder / name, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def manifest_path(dataset: str, variant: str = CLEAN) -> Path:
    check_name(dataset, what="dataset")
    check_name(variant, what="variant")
    return data_home() / dataset / f"{variant}.parquet"


def split_ref(ref: str) -> tuple[str, str]:
    """``NAME`` -> (NAME, clean); ``NAME/VARIANT`` -> (NAME, VARIANT)."""
    dataset, _, variant = ref.partition("/")
    return dataset, variant or CLEAN


def resolve_manifest(ref: str) -> Path:
    """A dataset reference (``NAME``, ``NAME/VARIANT`` or a path to a manifest) -> the manifest's path."""
    if ref.endswith(".parquet"):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise NotBuilt(f"manifest {path} does not exist")
        return path
    dataset, variant = split_ref(ref)
    path = manifest_path(dataset, variant)
    if not path.is_file():
        if not path.parent.is_dir():
            raise NotBuilt(f"dataset {dataset!r} is not built (no {path.parent}); run `noisekit build {dataset}` first")
        have = sorted(p.stem for p in path.parent.glob("*.parquet"))
        raise NotBuilt(f"variant {variant!r} of {dataset!r} does not exist (have: {', '.join(have)})")
    return path
