"""``noisekit info``: what a manifest holds, as a JSON object or a readable table."""

from __future__ import annotations

import json
from typing import Any

from noisekit.manifest import Manifest, read_manifest
from noisekit.paths import resolve_manifest

NOISE_KEYS = ("model", "requested_rate", "realised_rate", "seed")


def summary(manifest: Manifest) -> dict[str, Any]:
    """The ``noisekit info --json`` object (design.md, CLI contract)."""
    meta = manifest.meta
    noise = meta.noise or {}
    out: dict[str, Any] = {"dataset": meta.dataset, "variant": meta.variant, **manifest.counts()}
    out["noise"] = {k: noise.get(k) for k in NOISE_KEYS} | {k: v for k, v in noise.items() if k not in NOISE_KEYS}
    train = manifest.split("train")
    flags = train["is_noisy"]
    out["noisy"] = {
        "known": int(flags.notna().sum()),
        "noisy": int(flags.fillna(False).sum()),
        "unknown": int(flags.isna().sum()),
    }
    out["root"] = meta.root
    return out


def info(ref: str) -> dict[str, Any]:
    return summary(read_manifest(resolve_manifest(ref)))


def render(data: dict[str, Any]) -> str:
    """A readable table of :func:`summary`'s object."""
    lines = [
        f"{data['dataset']}/{data['variant']}  (root {data['root']})",
        f"{'split':<8}{'images':>10}{'classes':>10}",
    ]
    for split, n in data["splits"].items():
        lines.append(f"{split:<8}{n:>10,}{data['classes'][split]:>10,}")
    noisy = data["noisy"]
    lines.append(
        f"train labels: {noisy['noisy']:,} known noisy, {noisy['known'] - noisy['noisy']:,} known clean, "
        f"{noisy['unknown']:,} unknown"
    )
    noise = data["noise"]
    if noise.get("model"):
        # an imported list has no requested rate or seed: only what is known is shown
        said = [f"requested {noise['requested_rate']}"] if noise["requested_rate"] is not None else []
        said += [f"realised {noise['realised_rate']:.4f}"] if noise["realised_rate"] is not None else []
        said += [f"seed {noise['seed']}"] if noise["seed"] is not None else []
        lines.append("  ".join([f"noise: {noise['model']}", *said]))
    return "\n".join(lines)


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True)
