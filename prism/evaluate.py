"""Retrieval metrics on the test split: Precision@1, MAP@R, R-Precision and Recall@K by exact cosine kNN (faiss).

The query set is the reference set (leave-one-out): every embedding queries all the others and never retrieves
itself. Precision@1, MAP@R and R-Precision are exactly pytorch-metric-learning's ``AccuracyCalculator`` called as
``AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
k="max_bin_count").get_accuracy(embeddings, labels)``; tests hold the two equal.

Queries whose class has a single member (R = 0: nothing can be retrieved) are left out of every average, as
pytorch-metric-learning leaves them out; when every class has a single member there is nothing to average and
every metric is ``nan``, as it is there.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from noisekit.errors import NoisekitError

METRICS = ("precision_at_1", "mean_average_precision_at_r", "r_precision")
# Rows of the neighbour table scored at a time, so that a large k (Food-101's test classes hold 1,000 images)
# never builds several (n, k) temporaries at once.
_BLOCK_ELEMENTS = 1 << 22


def _as_numpy(value: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.is_floating_point() and value.dtype != torch.float64:
            value = value.float()  # numpy has no bfloat16
        return value.numpy()
    return np.asarray(value)


def _validate(embeddings: np.ndarray, labels: np.ndarray, recall_ks: tuple[int, ...]) -> None:
    if embeddings.ndim != 2:
        raise NoisekitError(f"embeddings: expected a 2-D array (n, dim), got shape {embeddings.shape}")
    if not (np.issubdtype(embeddings.dtype, np.floating) or np.issubdtype(embeddings.dtype, np.integer)):
        raise NoisekitError(f"embeddings: expected real numbers, got dtype {embeddings.dtype}")
    if labels.ndim != 1:
        raise NoisekitError(f"labels: expected a 1-D array (n,), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise NoisekitError(f"labels: expected integer class labels, got dtype {labels.dtype}")
    if len(labels) != len(embeddings):
        raise NoisekitError(f"labels: expected {len(embeddings)} labels (one per embedding row), got {len(labels)}")
    if len(embeddings) < 2:
        raise NoisekitError(f"embeddings: expected at least 2 rows, got {len(embeddings)}")
    if embeddings.shape[1] < 1:
        raise NoisekitError(f"embeddings: expected at least 1 column, got shape {embeddings.shape}")
    bad = int(np.size(embeddings) - np.count_nonzero(np.isfinite(embeddings)))
    if bad:
        raise NoisekitError(f"embeddings: expected finite values, got {bad} NaN or infinite entries")
    if not recall_ks or not all(
        isinstance(k, int | np.integer) and not isinstance(k, bool) and k > 0 for k in recall_ks
    ):
        raise NoisekitError(f"recall_ks: expected a non-empty tuple of positive integers, got {recall_ks!r}")


def _normalise(embeddings: np.ndarray) -> np.ndarray:
    """Unit rows as float32 (a zero row stays zero, as ``torch.nn.functional.normalize`` leaves it)."""
    x = embeddings.astype(np.float64)
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def _neighbours(x: np.ndarray, k: int) -> np.ndarray:
    """Indices (n, k) of each row's k most similar other rows, most similar first; duplicates in index order.

    pytorch-metric-learning lists equal distances lowest index first (faiss's IndexFlatL2), and that order decides
    Precision@1 wherever duplicate embeddings (duplicate images, a collapsed model) carry different labels.
    IndexFlatIP breaks ties its own way, and differently for small and large k, so each distinct vector is searched
    once and expanded into its rows in index order. (Distinct vectors at exactly equal similarity keep faiss's
    order; pytorch-metric-learning's order for them comes from the rounding of squared norms and is not a rule.)
    The row itself is dropped by index; where duplicates tie with it and push it out of the first k + 1, the last
    column goes instead, as pytorch-metric-learning's FaissKNN does.
    """
    n = len(x)
    x = x + np.float32(0.0)  # -0.0 -> 0.0, so that equal vectors have equal bytes
    _, first, inverse = np.unique(
        np.ascontiguousarray(x).view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel(),
        return_index=True,
        return_inverse=True,
    )
    # Number the distinct vectors by first occurrence; members[starts[g]:starts[g] + counts[g]] are g's rows.
    by_first = np.argsort(first)
    group = np.empty_like(by_first)
    group[by_first] = np.arange(len(first))
    inverse = group[inverse.ravel()]
    counts = np.bincount(inverse)
    members = np.argsort(inverse, kind="stable")
    starts = np.cumsum(counts) - counts

    unique = x[first[by_first]]
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(unique)
    _, found = index.search(unique, min(k + 1, len(unique)))  # these groups hold at least k + 1 rows

    # Expand each found group into its rows, keeping the first k + 1 rows of every list.
    take = counts[found]
    take = np.clip(k + 1 - (np.cumsum(take, axis=1) - take), 0, take).ravel()
    within = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
    found = members[np.repeat(starts[found.ravel()], take) + within].reshape(len(unique), k + 1)[inverse]
    drop = found == np.arange(n)[:, None]
    drop[~drop.any(axis=1), -1] = True
    return found[~drop].reshape(n, k)


def retrieval_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    *,
    recall_ks: tuple[int, ...] = (1, 2, 4, 8),
) -> dict[str, float]:
    """Leave-one-out retrieval metrics of ``embeddings`` under cosine similarity.

    Parameters
    ----------
    embeddings : (n, dim) array or tensor, any real dtype; rows are L2-normalised here, n >= 2, finite values.
    labels : (n,) integer array or tensor, the class of each row.
    recall_ks : the K of each Recall@K.

    Returns
    -------
    ``precision_at_1``, ``mean_average_precision_at_r``, ``r_precision`` (pytorch-metric-learning's definitions,
    with R = class size - 1 and a plain mean over queries) and ``recall_at_K`` for each K in ``recall_ks``: the
    fraction of queries with at least one same-class item among their K nearest neighbours (K capped at n - 1).
    Queries from size-one classes can never hit and are left out of every mean, Recall@K included, so
    ``recall_at_1 == precision_at_1`` exactly. Every value is ``nan`` when all classes have size one.
    """
    emb, lab = _as_numpy(embeddings), _as_numpy(labels)
    _validate(emb, lab, recall_ks)
    n, ks = len(emb), tuple(dict.fromkeys(int(k) for k in recall_ks))  # (8, 8) is one Recall@8
    _, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
    relevant = counts[inverse] - 1  # R of each query: the other members of its class
    queries = relevant > 0
    names = [*METRICS, *(f"recall_at_{k}" for k in ks)]
    if not queries.any():
        return dict.fromkeys(names, float("nan"))

    k = min(max(int(relevant.max()), *ks), n - 1)
    found = _neighbours(_normalise(emb), k)
    found, own, relevant = found[queries], lab[queries], relevant[queries]

    ranks = np.arange(1, k + 1)
    sums = dict.fromkeys(names, 0.0)
    step = max(1, _BLOCK_ELEMENTS // k)
    for start in range(0, len(own), step):
        stop = start + step
        r = relevant[start:stop]
        hit = lab[found[start:stop]] == own[start:stop, None]
        hit_in_r = hit & (ranks <= r[:, None])  # PML scores only the first R neighbours for both R-metrics
        correct = np.cumsum(hit_in_r, axis=1)
        sums["precision_at_1"] += float(hit[:, 0].sum())
        sums["r_precision"] += float((correct[:, -1] / r).sum())
        sums["mean_average_precision_at_r"] += float((((correct * hit_in_r) / ranks).sum(axis=1) / r).sum())
        seen = np.logical_or.accumulate(hit, axis=1)
        for recall_k in ks:
            sums[f"recall_at_{recall_k}"] += float(seen[:, min(recall_k, k) - 1].sum())
    return {name: total / len(own) for name, total in sums.items()}


@torch.no_grad()
def embed_loader(
    model: torch.nn.Module, loader: DataLoader, device: torch.device, *, normalize: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Embed every batch of ``loader`` with ``model`` in eval mode (``normalize=False``: the outputs as they are).

    ``loader`` yields ``(images, labels, indices)`` or ``(images, labels)``; ``model`` maps images to (batch, dim).
    Returns (n, dim) float32 L2-normalised embeddings and (n,) int64 labels, in loader order. Each submodule's
    train/eval mode is restored afterwards, also when the model raises.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    embeddings: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    try:
        for batch in loader:
            if not isinstance(batch, list | tuple) or len(batch) not in (2, 3):
                raise NoisekitError(
                    f"loader: expected batches of (images, labels[, indices]), got {type(batch).__name__}"
                    + (f" of length {len(batch)}" if isinstance(batch, list | tuple) else "")
                )
            out = model(batch[0].to(device, non_blocking=True))
            if out.ndim != 2:
                raise NoisekitError(f"model: expected (batch, dim) embeddings, got shape {tuple(out.shape)}")
            embeddings.append((F.normalize(out.float(), dim=1) if normalize else out.float()).cpu())
            labels.append(torch.as_tensor(batch[1]).reshape(-1).to(torch.int64).cpu())
    finally:
        for module, training in modes:
            module.training = training
    if not embeddings:
        raise NoisekitError("loader: yielded no batches")
    return torch.cat(embeddings).numpy(), torch.cat(labels).numpy()
