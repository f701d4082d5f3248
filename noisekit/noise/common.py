"""What every noise model shares: option checks, variant names, and writing a variant with its report."""

from __future__ import annotations

from pathlib import Path

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, write_manifest
from noisekit.noise.report import noise_report, write_report
from noisekit.paths import check_variant, manifest_path, variant_lock


def check_rate(rate: float) -> float:
    if not 0.0 <= rate < 1.0:
        raise NoisekitError(f"--rate must be in [0, 1), got {rate}")
    return float(rate)


def require_clean(manifest: Manifest) -> Manifest:
    """Noise is added to a clean manifest whose training labels are all known."""
    meta = manifest.meta
    if meta.variant != "clean":
        raise NoisekitError(f"noise is added to a clean manifest; {meta.dataset}/{meta.variant} is not")
    unknown = int((manifest.split("train")["clean_label"] < 0).sum())
    if unknown:
        raise NoisekitError(f"{meta.dataset}: {unknown} training images have unknown clean labels; cannot add noise")
    return manifest


def round_half_up(x: float) -> int:
    """round() as people mean it (0.5 -> 1), not Python's banker's rounding."""
    return int(x + 0.5 + 1e-9)


def variant_name(model: str, rate: float) -> str:
    return f"{model}-{rate:g}"


def save_variant(manifest: Manifest, extra: dict | None = None, *, overwrite: bool = False) -> tuple[Path, dict]:
    """Write ``NAME/VARIANT.parquet`` plus ``VARIANT.report.json`` and ``VARIANT.report.png`` beside it, as one unit
    under the variant's lock. A variant that exists with other content (another seed, rate or model) is replaced
    only with ``overwrite``; the same content is written again unchanged."""
    dataset, variant = manifest.meta.dataset, check_variant(manifest.meta.variant)
    path = manifest_path(dataset, variant)
    report = noise_report(manifest, extra or {})
    with variant_lock(dataset, variant):
        write_manifest(manifest, path, overwrite=overwrite)
        write_report(report, path.with_suffix(".report.json"), path.with_suffix(".report.png"))
    return path, report


def load_clean(dataset: str) -> Manifest:
    """The clean manifest of a built dataset, or an error saying how to build it."""
    from noisekit.manifest import read_manifest
    from noisekit.paths import resolve_manifest

    name, _, variant = dataset.partition("/")
    if variant not in ("", "clean"):
        raise NoisekitError(f"--dataset takes NAME or NAME/clean (noise goes on the clean manifest), got {dataset!r}")
    dataset = name
    return read_manifest(resolve_manifest(dataset))
