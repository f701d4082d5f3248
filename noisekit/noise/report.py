"""The noise report written beside each variant: rates, noisy count per class, the most frequent clean -> noisy
transitions, and for Small Cluster the dissolved classes and the cluster size histogram; as JSON and a PNG, and the
lines ``noisekit make`` and ``import-lists`` print about it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from noisekit.manifest import Manifest, atomic_path, write_json

TOP_TRANSITIONS = 10


def noise_report(manifest: Manifest, extra: dict[str, Any]) -> dict[str, Any]:
    meta, train = manifest.meta, manifest.split("train")
    known = train[train["is_noisy"].notna()]
    noisy = known[known["is_noisy"].astype(bool)]
    clean_names, label_names = meta.class_names, meta.labels
    per_class = Counter(clean_names[c] for c in noisy["clean_label"] if c >= 0)
    transitions = Counter(
        (clean_names[c], label_names[lab])
        for c, lab in zip(noisy["clean_label"], noisy["label"], strict=True)
        if c >= 0
    )
    noise = meta.noise or {}
    return {
        "dataset": meta.dataset,
        "variant": meta.variant,
        "model": noise.get("model"),
        "requested_rate": noise.get("requested_rate"),
        "realised_rate": noise.get("realised_rate"),
        "seed": noise.get("seed"),
        "train_images": int(len(train)),
        "known": int(len(known)),
        "noisy": int(len(noisy)),
        "noisy_per_class": dict(sorted(per_class.items())),
        "top_transitions": [
            {"clean": a, "noisy": b, "count": n} for (a, b), n in transitions.most_common(TOP_TRANSITIONS)
        ],
        **extra,
    }


def rate_words(requested: float | None, realised: float | None) -> str:
    """``requested R, realised X``; an imported list has no requested rate, so only what is known is said."""
    words = [] if requested is None else [f"requested {requested}"]
    words += [] if realised is None else [f"realised {realised:.4f}"]
    return ", ".join(words)


def variant_line(path: Path, report: dict[str, Any], seconds: float) -> str:
    """The line ``noisekit make`` prints for the variant it wrote."""
    return (
        f"{report['dataset']}/{report['variant']}: {rate_words(report['requested_rate'], report['realised_rate'])} "
        f"({report['noisy']:,} of {report['train_images']:,} training labels noisy) in {seconds:.1f}s -> {path}"
    )


def dissolved_line(figures: dict[str, Any]) -> str:
    """What ``noisekit make small-cluster`` tells about the classes it dissolved."""
    return (
        f"dissolved {len(figures['dissolved_classes'])} of {figures['original_classes']} classes into "
        f"{figures['clusters']} clusters ({figures['clusters_with_merged_images']} of them holding images merged "
        f"earlier into a class that dissolved later); {figures['surviving_classes']} classes survive"
    )


def import_notes(noise: dict[str, Any], list_name: str, dataset: str) -> list[str]:
    """What ``noisekit import-lists`` tells about a list it imported: how its labels were read, what it left out."""
    lines = [f"{list_name}: labels read as {'class ids' if noise['labels'] == 'ids' else 'learned classes'}"]
    if noise["extra_labels"]:
        lines.append(
            f"{list_name}: {noise['extra_label_rows']:,} row(s) carry the id of a class outside the training split "
            f"({', '.join(map(repr, noise['extra_labels']))}); kept as extra training class(es), as the list says"
        )
    if noise["out_of_range_rows"]:
        lines.append(
            f"{list_name}: left out {noise['out_of_range_rows']:,} row(s) whose label is no class id of {dataset}"
        )
    if noise.get("unmapped") or noise.get("dropped_train_rows"):
        lines.append(
            f"{list_name}: skipped {noise['unmapped']:,} unmapped row(s); left out {noise['dropped_train_rows']:,} "
            f"training image(s) the list does not name"
        )
    return lines


def _cluster_sizes(ax: Any, report: dict[str, Any]) -> None:
    """Stacked bars: clusters of a dissolved class's own images, and those holding images merged into it earlier."""
    own, merged = report["cluster_size_histogram_own_images_only"], report["cluster_size_histogram_with_merged_images"]
    sizes = sorted(set(own) | set(merged), key=int)
    counts_own = [own.get(s, 0) for s in sizes]
    ax.bar(sizes, counts_own, color="tab:blue", label=f"own images only ({report['clusters_own_images_only']})")
    ax.bar(
        sizes,
        [merged.get(s, 0) for s in sizes],
        bottom=counts_own,
        color="tab:orange",
        label=f"with images merged earlier ({report['clusters_with_merged_images']})",
    )
    ax.legend(fontsize="small")
    ax.set(
        xlabel="cluster size (images)",
        ylabel="clusters",
        title=f"Small Cluster: all {report['clusters']} clusters by size",
    )


def write_report(report: dict[str, Any], json_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    write_json(json_path, report)
    hist = "cluster_size_histogram_own_images_only" in report
    fig, axes = plt.subplots(1, 2 if hist else 1, figsize=(11 if hist else 6, 3.5), squeeze=False)
    counts = np.array(list(report["noisy_per_class"].values()) or [0])
    ax = axes[0, 0]
    ax.bar(range(len(counts)), counts, width=1.0, color="tab:red")
    ax.set(xlabel="clean class (sorted by name)", ylabel="noisy images", title="noisy images per clean class")
    if hist:
        _cluster_sizes(axes[0, 1], report)
    rates = rate_words(report.get("requested_rate"), report.get("realised_rate"))
    fig.suptitle(f"{report['dataset']}/{report['variant']}" + (f": {rates}" if rates else ""))
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
