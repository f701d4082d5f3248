"""Small Cluster noise (open-set), the model of the PRISM paper.

Repeatedly pick a random surviving training class, split its current images with k-means on L2-normalised features
of a pretrained backbone (the paper's ImageNet ResNet-18 by default; ``features.py``) into n_c/2 clusters (faiss;
seeded; every point may be its own centroid; no subsampling), and merge each cluster into a random surviving class;
the picked class is gone. Stop once the images of dissolved classes
reach R of the training set. Training labels are then re-indexed densely over the surviving classes; test labels
follow them, so ``label`` indexes ``label_names`` and ``clean_label`` still indexes ``class_names``.

The order in which classes dissolve is drawn first (from its own random stream), so a rate that would leave fewer
than two classes is refused before any feature is computed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import faiss
import numpy as np

from noisekit.errors import NoisekitError
from noisekit.manifest import Manifest, make_frame
from noisekit.noise.common import check_rate, require_clean, variant_name

KMEANS_ITERATIONS = 20
# Restarts from other random initialisations, keeping the lowest objective: one random init can seed two
# centroids on two near-identical images and never separate them again.
KMEANS_RESTARTS = 5


@dataclass(frozen=True)
class Plan:
    """Which classes dissolve, in order, and the random stream for k-means seeds and merge targets."""

    order: np.ndarray  # clean class ids to dissolve, in order
    merge_rng: np.random.Generator


def plan(manifest: Manifest, *, rate: float, seed: int) -> Plan:
    rate = check_rate(rate)
    require_clean(manifest)
    train = manifest.split("train")
    classes, sizes = np.unique(train["clean_label"].to_numpy(), return_counts=True)
    order_rng, merge_rng = np.random.default_rng(seed).spawn(2)
    perm = order_rng.permutation(len(classes))
    dissolved = np.cumsum(sizes[perm])
    # the shortest prefix of the order whose images reach rate * n (none at rate 0)
    count = 0 if rate == 0 else int(np.searchsorted(dissolved, rate * len(train) - 1e-9) + 1)
    if len(classes) - count < 2:
        raise NoisekitError(
            f"--rate {rate} would leave {max(len(classes) - count, 0)} of {len(classes)} training classes; "
            "Small Cluster needs at least two to survive"
        )
    return Plan(order=classes[perm[:count]], merge_rng=merge_rng)


def kmeans(points: np.ndarray, k: int, *, seed: int) -> np.ndarray:
    """faiss k-means cluster assignment of ``points`` (n, d) into ``k`` clusters, without subsampling."""
    n, d = points.shape
    km = faiss.Kmeans(
        d,
        k,
        niter=KMEANS_ITERATIONS,
        nredo=KMEANS_RESTARTS,
        seed=seed,
        min_points_per_centroid=1,
        max_points_per_centroid=n,
    )
    km.train(np.ascontiguousarray(points, dtype=np.float32))
    _, assign = km.index.search(np.ascontiguousarray(points, dtype=np.float32), 1)
    return assign.ravel()


def apply(manifest: Manifest, features: np.ndarray, the_plan: Plan) -> tuple[np.ndarray, dict[str, object]]:
    """Run the dissolution on the training rows; return their new (clean-space) labels and report figures.

    ``features``: (n_train, d), aligned with ``manifest.split("train")``.
    """
    current = manifest.split("train")["clean_label"].to_numpy().copy()
    if len(features) != len(current):
        raise NoisekitError(f"features cover {len(features)} images, the training split has {len(current)}")
    own_class = current.copy()
    surviving = set(np.unique(current).tolist())
    # a class that dissolves holds its own images and those merged into it earlier: its clusters are counted apart
    # by whether they hold only its own images or some merged ones (which thereby move a second time)
    sizes: dict[str, Counter] = {"own_images_only": Counter(), "with_merged_images": Counter()}
    for c in the_plan.order:
        surviving.discard(int(c))
        members = np.flatnonzero(current == c)
        assign = kmeans(features[members], max(1, len(members) // 2), seed=int(the_plan.merge_rng.integers(2**31)))
        targets = np.array(sorted(surviving))
        cluster_target = targets[the_plan.merge_rng.integers(0, len(targets), size=assign.max() + 1)]
        current[members] = cluster_target[assign]
        merged = np.bincount(assign, weights=own_class[members] != c, minlength=assign.max() + 1)
        for k, size in enumerate(np.bincount(assign)):
            if size:
                sizes["with_merged_images" if merged[k] else "own_images_only"][int(size)] += 1
    return current, {
        "dissolved_classes": [manifest.meta.class_names[c] for c in the_plan.order],
        "original_classes": len(surviving) + len(the_plan.order),
        "surviving_classes": len(surviving),
        "clusters": sum(sum(h.values()) for h in sizes.values()),
        **{f"clusters_{kind}": sum(h.values()) for kind, h in sizes.items()},
        **{f"cluster_size_histogram_{kind}": {str(k): h[k] for k in sorted(h)} for kind, h in sizes.items()},
    }


def small_cluster(
    manifest: Manifest,
    features: np.ndarray,
    *,
    rate: float,
    seed: int,
    the_plan: Plan | None = None,
    variant: str | None = None,
    provenance: dict[str, object] | None = None,
) -> tuple[Manifest, dict[str, object]]:
    """The Small Cluster variant of a clean manifest and its report figures."""
    require_clean(manifest)
    the_plan = the_plan or plan(manifest, rate=rate, seed=seed)
    new_train, figures = apply(manifest, features, the_plan)

    frame, names = manifest.frame, manifest.meta.class_names
    is_train = (frame["split"] == "train").to_numpy()
    clean = frame["clean_label"].to_numpy()
    survivors = np.unique(new_train)
    test_classes = np.unique(clean[~is_train])
    dense = {int(c): k for k, c in enumerate(np.concatenate([survivors, test_classes]))}
    label = clean.copy()
    label[is_train] = new_train
    label = np.array([dense[int(c)] for c in label], dtype=np.int64)
    # is_noisy is decided in the clean space: the training label spaces differ after re-indexing
    noisy = np.zeros(len(frame), dtype=bool)
    noisy[is_train] = new_train != clean[is_train]
    out = make_frame(frame["image_id"], frame["path"], frame["split"], clean, label=label, is_noisy=noisy)
    for extra in frame.columns.difference(out.columns):
        out[extra] = frame[extra].to_numpy()
    realised = float(noisy[is_train].mean())
    noise = {
        "model": "small_cluster",
        "requested_rate": float(rate),
        "realised_rate": realised,
        "seed": int(seed),
        "classes_dissolved": len(the_plan.order),
        **(provenance or {}),
    }
    label_names = tuple(names[c] for c in np.concatenate([survivors, test_classes]))
    variant = variant or variant_name("small_cluster", rate)
    # the report names the feature model too: its clusters mean nothing without it
    figures = {**figures, **(provenance or {})}
    return manifest.replace(out, variant=variant, noise=noise, label_names=label_names), figures
