"""``--filter knn`` (Galanakis et al.): votes counted by hand, the search against faiss, the first-epoch rule."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prism.filters.knn import KnnFilter, vote_scores, votes
from prism.memory import FeatureBank


def test_votes_and_scores_by_hand() -> None:
    neighbours = torch.tensor([[0, 0, 1, 2, -1], [1, 1, 1, 0, 0], [2, 0, 0, 0, 2]])
    counts = votes(neighbours, 3)
    assert counts.tolist() == [[2, 1, 1], [2, 3, 0], [3, 0, 2]]
    # own label 1 in a row where 0 leads with 2: 1 / 2 = 0.5 (kept at the 0.5 threshold); label 0 vs 1's 3: 2 / 3
    assert vote_scores(counts, torch.tensor([1, 0, 2])).tolist() == pytest.approx([0.5, 2 / 3, 2 / 3])


def test_knn_filter_rejects_by_the_relative_vote() -> None:
    """Bank: 12 samples near direction A labelled 0, 4 near A labelled 1 (noise), 12 near B labelled 1. A query near A
    with k = 16: its neighbours are the 16 near A (12 x label 0, 4 x label 1): labelled 0 it scores 1, labelled 1 it
    scores 4 / 12 < 0.5 and is rejected."""
    g = torch.Generator().manual_seed(0)
    a, b = F.normalize(torch.randn(2, 16, generator=g), dim=1)
    near_a = F.normalize(a + 0.05 * torch.randn(16, 16, generator=g), dim=1)
    near_b = F.normalize(b + 0.05 * torch.randn(12, 16, generator=g), dim=1)
    bank = FeatureBank(28, 16, num_classes=2)
    bank.enqueue(torch.cat([near_a, near_b]), torch.tensor([0] * 12 + [1] * 4 + [1] * 12))
    knn = KnnFilter(2, k=16)
    query = F.normalize(a + 0.05 * torch.randn(2, 16, generator=g), dim=1)
    sel = knn(query, torch.tensor([0, 1]), bank)
    assert sel.keep.tolist() == [True, False]
    assert sel.p.tolist() == pytest.approx([1.0, 4 / 12]) and sel.likely.tolist() == [0, 0]


def test_knn_keeps_everything_until_the_bank_has_filled_once() -> None:
    bank = FeatureBank(10, 4, num_classes=2)
    bank.enqueue(F.normalize(torch.ones(5, 4), dim=1), torch.zeros(5, dtype=torch.long))
    sel = KnnFilter(2, k=3)(F.normalize(torch.ones(2, 4), dim=1), torch.tensor([1, 1]), bank)
    assert sel.keep.all() and not sel.has.any()


def test_neighbours_are_faiss_exact_neighbours() -> None:
    g = torch.Generator().manual_seed(1)
    bank_feats = F.normalize(torch.randn(500, 32, generator=g), dim=1)
    labels = torch.randint(0, 7, (500,), generator=g)
    bank = FeatureBank(500, 32, num_classes=7)
    bank.enqueue(bank_feats, labels)
    query = F.normalize(torch.randn(20, 32, generator=g), dim=1)
    _, index = KnnFilter(7, k=25).search(query, 25, bank.feats)
    flat = faiss.IndexFlatL2(32)
    flat.add(bank_feats.numpy())
    _, expected = flat.search(query.numpy(), 25)
    for got, want in zip(index.numpy(), expected, strict=True):
        assert set(got) == set(want)
    counts = votes(bank.labels[index], 7).numpy()
    by_faiss = np.stack([np.bincount(labels.numpy()[row], minlength=7) for row in expected])
    assert (counts == by_faiss).all()
