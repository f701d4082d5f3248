"""Symmetric noise: round(R * N) training images in all move to a class drawn uniformly from the other training
classes. Class c gives floor(R * n_c) or ceil(R * n_c) of its n_c images; which classes give the extra one is drawn
with the seed by systematic sampling over a shuffled class order, class c with probability frac(R * n_c) (scaled so
the probabilities sum to the extras that round(R * N) leaves), so its expected count is R * n_c up to the rounding
of the total. Small classes are neither over-flipped (0.5 rounded up in every class of 2 images) nor left untouched
(0.2 rounded down in every class of 2).
The test split is untouched; the class count is unchanged."""

from __future__ import annotations

import numpy as np

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, make_frame
from noisekit.noise.common import check_rate, require_clean, round_half_up, variant_name


def inclusion(frac: np.ndarray, extra: int) -> np.ndarray:
    """Probabilities proportional to ``frac``, at most 1 each, summing to ``extra`` (<= the number of nonzero ones):
    a class whose scaled share reaches 1 is capped there for good, and the rest is rescaled over the others."""
    prob = np.zeros(len(frac))
    capped = np.zeros(len(frac), dtype=bool)
    while True:
        free = ~capped & (frac > 0)
        left = extra - int(capped.sum())
        prob[capped] = 1.0
        if left <= 0 or not free.any():
            break
        prob[free] = frac[free] * (left / frac[free].sum())
        over = free & (prob >= 1.0)
        if not over.any():
            break
        capped |= over
    return np.minimum(prob, 1.0)


def flip_counts(sizes: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """How many images each class gives: floor or ceil of its share, summing to round(R * N) exactly.

    Shapes: ``sizes`` (C,) class sizes -> (C,) int64 counts.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    total = round_half_up(rate * sizes.sum())
    share = rate * sizes
    base = np.floor(share + 1e-9).astype(np.int64)
    extra = total - int(base.sum())
    if extra <= 0:
        return base
    prob = inclusion(np.clip(share - base, 0.0, 1.0), extra)
    # systematic sampling: classes in random order on a line, each taking a segment of length prob; one uniform
    # offset u and the points u, u + 1, ..., u + extra - 1 pick exactly `extra` classes, class c with probability prob_c
    order = rng.permutation(len(sizes))
    ends = np.cumsum(prob[order])
    ends *= extra / ends[-1]  # remove float drift so the last segment ends at `extra`
    starts = np.concatenate([[0.0], ends[:-1]])
    u = rng.random()
    hits = np.floor(ends - u) - np.floor(starts - u)
    out = base.copy()
    out[order] += hits.astype(np.int64)
    return out


def symmetric(manifest: Manifest, *, rate: float, seed: int, variant: str | None = None) -> Manifest:
    """Return the noisy variant of a clean manifest (rows in the same order)."""
    rate = check_rate(rate)
    require_clean(manifest)
    frame = manifest.frame
    train = np.flatnonzero((frame["split"] == "train").to_numpy())
    clean = frame["clean_label"].to_numpy()
    classes, sizes = np.unique(clean[train], return_counts=True)
    if len(classes) < 2:
        raise NoisekitError(f"{manifest.meta.dataset}: symmetric noise needs at least two training classes")
    rng = np.random.default_rng(seed)
    counts = flip_counts(sizes, rate, rng)
    label = frame["label"].to_numpy().copy()
    for c, count in zip(classes, counts, strict=True):
        members = train[clean[train] == c]
        flip = rng.choice(members, size=int(count), replace=False)
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
        "classes_touched": int((counts > 0).sum()),
    }
    return manifest.replace(out, variant=variant or variant_name("symmetric", rate), noise=noise)
