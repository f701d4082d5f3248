"""Nearest-neighbour rejection (Galanakis et al., VISAPP 2024, "Nearest neighbor-based data denoising for deep metric
learning"; code: ggalan87/nearest-neighbor-data-denoising, read at 084d9b7): ``--filter knn``. It needs no rate.

For each sample of the batch, its k nearest bank features (L2 distance between L2-normalised embeddings, the
library's exact search: pytorch-metric-learning's ``CustomKNN`` with ``LpDistance(normalize_embeddings=True,
power=2)`` in batches of 2,048, as their ``BatchedKNN``, torch_metric_learning/utils.py:95-104 and
noise_reducers/sample_rejection/knn.py:44-45) vote with their labels; the score of class c is its vote count divided
by the count of the most frequent label (openset_helpers/knn_based_reweighting.py:12-24, ``scale=True``), and a
sample is rejected when the score of its own label is below 0.5 (rejection_criteria.py:40-46,
``HighScoreInPositiveClassCriterion``; configs/common/noise_reduction/knn_noise_reduction.yaml:6-9: k = 200,
threshold 0.5). Votes are unweighted; the sample's own earlier feature is not excluded (their ``BatchedKNN`` has no
self-exclusion); a rejected sample is dropped from this step's loss only and is judged again when drawn next
(model_base.py:242-269).

Their memory (yaml:11-12: ``keep_only_good_samples: False``, ``memory_size: 0``) holds every training embedding of
the previous epoch, rejected ones included, and is rebuilt at each epoch's end (memory_bank.py:140-144); nothing is
rejected during the first epoch (knn.py:68-69). Here (a stated deviation) the bank is prism's FIFO holding every
sample of the last ``--bank-size`` draws (by default as many as there are training images: one epoch's worth,
refreshed at every step instead of once an epoch), and nothing is rejected until it has filled once; k is capped
at the bank's size. The class the neighbours vote for most is the sample's likely class (``noisekit make cleaned
--relabel``); the vote counts are the class scores of the rate estimate it reports (it cuts by no rate).
"""

from __future__ import annotations

import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.inference import CustomKNN

from prism.filters.base import Filter
from prism.filters.rate import Rate
from prism.memory import FeatureBank
from prism.selection import Selection

K = 200  # knn_noise_reduction.yaml:6
THRESHOLD = 0.5  # knn_noise_reduction.yaml:9
SEARCH_BATCH = 2048  # their BatchedKNN's batch_size


def votes(neighbour_labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(n, C) vote counts of each row's neighbour labels (n, k); labels < 0 (empty bank slots) do not vote."""
    valid = neighbour_labels >= 0
    counts = torch.zeros(len(neighbour_labels), num_classes, device=neighbour_labels.device)
    return counts.scatter_add_(1, neighbour_labels.clamp(min=0), valid.float())


def vote_scores(counts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(n,) own label's count / the largest count (0 where nobody voted)."""
    own = counts.gather(1, labels.view(-1, 1)).squeeze(1)
    return own / counts.max(1).values.clamp(min=1)


class KnnFilter(Filter):
    enqueue_all = True

    def __init__(
        self, num_classes: int, *, k: int = K, threshold: float = THRESHOLD, device: torch.device | str = "cpu"
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.num_classes, self.k, self.threshold = num_classes, k, threshold
        self.rate = Rate("auto", device=device)  # nothing is cut by rate: the estimate is reported only
        self.search = CustomKNN(LpDistance(normalize_embeddings=True, power=2), batch_size=SEARCH_BATCH)

    @torch.no_grad()
    def __call__(self, feats: torch.Tensor, labels: torch.Tensor, bank: FeatureBank) -> Selection:
        feats = feats.detach().float()
        _, index = self.search(feats, min(self.k, bank.size), bank.feats)
        counts = votes(bank.labels[index], self.num_classes)
        score = vote_scores(counts, labels)
        filled = bank.count >= bank.size  # one epoch's worth of features: the authors reject from epoch 1 on
        voted = counts.sum(1) > 0
        likely = torch.where(voted, counts.argmax(1), torch.full_like(labels, -1))
        present = torch.ones(self.num_classes, dtype=torch.bool, device=feats.device)
        self.rate(counts, present, labels, voted & filled)  # the estimate is reported, not used
        keep = (score >= self.threshold) | ~filled
        return Selection(
            keep=keep,
            p=score,
            threshold=torch.full((), self.threshold, device=feats.device),
            likely=likely,
            has=voted & filled,
        )
