"""``noisekit build``: raw layout (downloaded on request) -> clean Manifest in the data home."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from noisekit.download import ARCHIVES, Archive, download_and_extract
from noisekit.errors import NoisekitError
from noisekit.manifest import check_inside, write_json, write_manifest
from noisekit.paths import CLEAN, data_home, manifest_path, variant_lock
from noisekit.sources import cars, cub, digits, food101n, omniglot, sop
from noisekit.sources.common import BuildResult

DATASETS = ("cars", "cub", "sop", "food101n", "digits", "omniglot", "cars98n")
# The folder each raw archive extracts to; `--root` may name it or its parent.
SUBDIRS = {
    "cars": "cars196",
    "cub": "CUB_200_2011",
    "sop": "Stanford_Online_Products",
    "food101n": "Food-101N_release",
}


@dataclass(frozen=True)
class BuildOptions:
    root: Path | None = None
    download: bool = False
    strict: bool = False
    food101_root: Path | None = None
    crawl: Path | None = None
    cars_root: Path | None = None
    mirror: str | None = None  # base URL serving the official archives under their own file names
    full: bool = False  # omniglot: the full background / evaluation sets instead of the shipped small subsets


def _locate(root: Path, subdir: str) -> Path:
    return root / subdir if (root / subdir).is_dir() else root


def _fetch_all(archives: tuple[Archive, ...], folder: Path, options: BuildOptions) -> list[Path]:
    if options.mirror:
        archives = tuple(replace(a, url=f"{options.mirror.rstrip('/')}/{a.filename}") for a in archives)
    return [download_and_extract(archive, folder) for archive in archives]


def _omniglot_root(options: BuildOptions) -> Path:
    folder = options.root or data_home() / "raw" / "omniglot"
    if options.download and not options.full:
        raise NoisekitError("omniglot's small subsets ship with noisekit; --download applies with --full")
    if options.download:
        _fetch_all(omniglot.ARCHIVES, folder, options)
    elif options.full and options.root is None:
        raise NoisekitError(
            "omniglot --full: pass --root (the folder holding images_background/ and images_evaluation/) or --download"
        )
    return folder


def _raw_root(name: str, options: BuildOptions) -> Path:
    folder = options.root or data_home() / "raw" / name
    if options.download:
        if name not in ARCHIVES:
            raise NoisekitError(
                f"{name} has no public download; place its raw files under --root and build without --download"
            )
        return _fetch_all(ARCHIVES[name], folder, options)[0]
    if options.root is None:
        raise NoisekitError(f"--root is required for {name} (the folder of its raw files), or pass --download")
    return _locate(folder, SUBDIRS.get(name, ""))


def build_manifest(name: str, options: BuildOptions = BuildOptions()) -> BuildResult:
    """Build ``name``'s clean manifest in memory."""
    if name not in DATASETS:
        raise NoisekitError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if name == "digits":
        return digits.build(options.root or data_home() / "digits" / "raw", strict=options.strict)
    if options.full and name != "omniglot":
        raise NoisekitError(f"--full applies to omniglot only, not {name}")
    if name == "omniglot":
        return omniglot.build(_omniglot_root(options), full=options.full, strict=options.strict)
    if name == "cars98n":
        from noisekit.sources import cars98n

        return cars98n.build(crawl=options.crawl, cars_root=options.cars_root, strict=options.strict)
    root = _raw_root(name, options)
    if name == "food101n":
        f101 = options.food101_root or (root.parent / "food-101" if options.download else None)
        return food101n.build(root, food101_root=f101 and _locate(f101, "food-101"), strict=options.strict)
    return {"cars": cars.build, "cub": cub.build, "sop": sop.build}[name](root, strict=options.strict)


def build(name: str, options: BuildOptions = BuildOptions(), *, overwrite: bool = False) -> tuple[Path, BuildResult]:
    """Build ``name`` and write ``$NOISEKIT_HOME/NAME/clean.parquet``; return its path and the build result.

    A clean manifest that exists with other content (another --root, other files) is replaced only with
    ``overwrite``: the variants and feature caches beside it were made from it."""
    result = build_manifest(name, options)
    check_inside(result.manifest, where=f"{name} under {result.manifest.meta.root}")  # no link out of the root
    with variant_lock(name, CLEAN):
        path = write_manifest(result.manifest, manifest_path(name), overwrite=overwrite)
        for report, payload in result.reports.items():
            write_json(path.with_suffix(f".{report}.json"), payload)
    return path, result
