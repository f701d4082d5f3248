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


# a realised rate further than this from the requested one reads as another rate in a results table (0.0006 vs 0.001)
VISIBLE = 0.0005


def rounding_warning(noise: dict, train_images: int) -> str | None:
    """One line when rounding to whole images made the realised rate visibly another rate, or turned a requested
    rate into no noise or every label wrong (0.9999 on 901 images is all 901); ``None`` otherwise."""
    requested, realised = noise["requested_rate"], noise["realised_rate"]
    degenerate = realised in (0.0, 1.0) and realised != requested
    if abs(realised - requested) <= VISIBLE and not degenerate:
        return None
    noisy = round(realised * train_images)
    return (
        f"warning: requested rate {requested:g} realised {realised:.4f}: round({requested:g} x {train_images:,} "
        f"training images) = {noisy:,} noisy label(s)"
    )


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
