"""Symmetric noise: in every training class c exactly round(R * n_c) images move to a class drawn uniformly from
the other training classes. The test split is untouched; the class count is unchanged."""

from __future__ import annotations

import numpy as np

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, make_frame
from noisekit.noise.common import check_rate, require_clean, round_half_up, variant_name


def symmetric(manifest: Manifest, *, rate: float, seed: int, variant: str | None = None) -> Manifest:
    """Return the noisy variant of a clean manifest (rows in the same order)."""
    rate = check_rate(rate)
    require_clean(manifest)
    frame = manifest.frame
    train = np.flatnonzero((frame["split"] == "train").to_numpy())
    clean = frame["clean_label"].to_numpy()
    classes = np.unique(clean[train])
    if len(classes) < 2:
        raise NoisekitError(f"{manifest.meta.dataset}: symmetric noise needs at least two training classes")
    rng = np.random.default_rng(seed)
    label = frame["label"].to_numpy().copy()
    for c in classes:
        members = train[clean[train] == c]
        flip = rng.choice(members, size=round_half_up(rate * len(members)), replace=False)
        others = classes[classes != c]
        label[np.sort(flip)] = others[rng.integers(0, len(others), size=len(flip))]
    noisy = label[train] != clean[train]
    out = make_frame(frame["image_id"], frame["path"], frame["split"], clean, label=label)
    for extra in frame.columns.difference(out.columns):
        out[extra] = frame[extra].to_numpy()
    noise = {
        "model": "symmetric",
        "requested_rate": rate,
        "realised_rate": float(noisy.mean()),
        "seed": int(seed),
    }
    return manifest.replace(out, variant=variant or variant_name("symmetric", rate), noise=noise)
