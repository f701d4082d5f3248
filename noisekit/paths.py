"""Where manifests live: ``$NOISEKIT_HOME`` (default ``~/.cache/noisekit``), as ``NAME/VARIANT.parquet``."""

from __future__ import annotations

import os
import re
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
            raise NotBuilt(
                f"dataset {dataset!r} is not built (no {path.parent}); run `noisekit build {dataset}` first"
            )
        have = sorted(p.stem for p in path.parent.glob("*.parquet"))
        raise NotBuilt(f"variant {variant!r} of {dataset!r} does not exist (have: {', '.join(have)})")
    return path
