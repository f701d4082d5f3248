"""``--filter-rate auto``: the estimator on constructed data, and each filter cutting at it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prism.filters.prism import PrismSelector
from prism.filters.rate import MAX_RATE, RateEstimator, beyond
from prism.memory import FeatureBank
from prism.selection import rank_cut

CLASSES, DIM = 10, 32


def _directions() -> torch.Tensor:
    return F.normalize(torch.randn(CLASSES, DIM, generator=torch.Generator().manual_seed(99)), dim=1)


def _batch(n: int, rate: float, seed: int, spread: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Samples around fixed class directions; exactly round(rate * n) carry a uniformly drawn wrong label."""
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, CLASSES, (n,), generator=g)
    feats = F.normalize(_directions()[true] + spread * torch.randn(n, DIM, generator=g), dim=1)
    noisy = torch.zeros(n, dtype=torch.bool)
    noisy[torch.randperm(n, generator=g)[: round(rate * n)]] = True
    wrong = (true + torch.randint(1, CLASSES, (n,), generator=g)) % CLASSES
    return feats, torch.where(noisy, wrong, true), noisy


def test_rank_p_values_by_hand() -> None:
    scores = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.4]).repeat(4, 1)
    every = torch.ones(5, dtype=torch.bool)
    # m = 4 others; a = (classes above) - 1, p ~ U(a / 4, (a + 1) / 4): label 0 on top, a = 0: P(p > 0.5) = 0;
    # label 1 last, a = 3: 1; label 2 below 3, a = 2: p in (0.5, 0.75): 1; label 3 below 2, a = 1: p in (0.25, 0.5): 0
    assert beyond(scores, every, torch.tensor([0, 1, 2, 3])).tolist() == [0.0, 1.0, 1.0, 0.0]
    # label 4 below one class, a = 0: 0. Ties: label 1 scores 0 with classes 0, 2, 3, below class 4: a = 0,
    # p ~ U(0, 4 / 4), P(p > 0.5) = 0.5
    assert beyond(scores[:1], every, torch.tensor([4])).tolist() == [0.0]
    tied = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0]])
    assert beyond(tied, every, torch.tensor([1])).tolist() == pytest.approx([0.5])
    # absent classes take no part: class 0 absent, label 1 is last of 4 present (m = 3, a = 2): p in (2/3, 1)
    assert beyond(scores[:1], torch.tensor([False, True, True, True, True]), torch.tensor([1])).tolist() == [1.0]


def test_estimator_is_storeys_over_its_window() -> None:
    est = RateEstimator(window=2)
    every = torch.ones(5, dtype=torch.bool)
    scores = torch.tensor([0.9, 0.1, 0.2, 0.3, 0.4]).repeat(4, 1)
    assert float(est.value()) == 0.0  # nothing scored yet
    est.observe(scores, every, torch.tensor([0, 1, 0, 0]), torch.ones(4, dtype=torch.bool))  # 1 of 4 beyond
    assert float(est.value()) == pytest.approx(1 / (0.5 * 4))
    est.observe(scores, every, torch.tensor([0, 0, 0, 1]), torch.tensor([True, True, True, False]))  # 0 of 3
    assert float(est.value()) == pytest.approx(1 / (0.5 * 7))
    est.observe(scores, every, torch.tensor([0, 0, 0, 0]), torch.ones(4, dtype=torch.bool))  # the first batch leaves
    assert float(est.value()) == 0.0
    for _ in range(2):
        est.observe(scores, every, torch.tensor([1, 1, 2, 2]), torch.ones(4, dtype=torch.bool))
    assert float(est.value()) == MAX_RATE


def test_tensor_rate_cuts_as_the_float_rate() -> None:
    p = torch.rand(64, generator=torch.Generator().manual_seed(0))
    for rate in (0.0, 0.01, 0.2, 0.5, 0.95):
        t_float, k_float = rank_cut(p, rate)
        t_tensor, k_tensor = rank_cut(p, torch.tensor(rate))
        assert torch.equal(k_float, k_tensor) and torch.equal(t_float, t_tensor), rate


@pytest.mark.parametrize("rate", [0.2, 0.5])
def test_prism_auto_estimates_a_known_mixture(rate: float) -> None:
    """Centres from a bank that holds the noisy labels too: the estimate comes within 0.03 of the true rate."""
    selector, bank = PrismSelector(CLASSES, DIM, rate="auto", window=5), FeatureBank(2000, DIM, num_classes=CLASSES)
    feats, labels, _ = _batch(2000, rate, seed=1)
    bank.enqueue(feats, labels)
    selector.update(bank, labels, torch.ones(2000, dtype=torch.bool))
    flagged = noisy_total = hits = 0
    for step in range(30):
        batch, given, noisy = _batch(64, rate, seed=100 + step)
        sel = selector(batch, given, bank)
        hits, flagged = hits + int((~sel.keep & noisy).sum()), flagged + int((~sel.keep).sum())
        noisy_total += int(noisy.sum())
    assert abs(float(selector.rate.current()) - rate) <= 0.03
    assert hits / flagged >= 0.9 and hits / noisy_total >= 0.85  # and the cut at the estimate finds the noise


def test_prism_auto_on_clean_labels_keeps_the_batch() -> None:
    selector, bank = PrismSelector(CLASSES, DIM, rate="auto"), FeatureBank(2000, DIM, num_classes=CLASSES)
    feats, labels, _ = _batch(2000, 0.0, seed=2)
    bank.enqueue(feats, labels)
    selector.update(bank, labels, torch.ones(2000, dtype=torch.bool))
    kept = [selector(*_batch(64, 0.0, seed=200 + step)[:2], bank).keep.float().mean() for step in range(30)]
    assert float(selector.rate.current()) < 1 / 64 and min(kept) == 1.0  # an estimate below 1/64 cuts nothing


def test_auto_state_survives_a_round_trip() -> None:
    selector, bank = PrismSelector(CLASSES, DIM, rate="auto"), FeatureBank(500, DIM, num_classes=CLASSES)
    feats, labels, _ = _batch(500, 0.5, seed=3)
    bank.enqueue(feats, labels)
    selector.update(bank, labels, torch.ones(500, dtype=torch.bool))
    selector(*_batch(64, 0.5, seed=4)[:2], bank)
    restored = PrismSelector(CLASSES, DIM, rate="auto")
    restored.load_state_dict(selector.state_dict())
    assert float(restored.rate.current()) == float(selector.rate.current()) > 0.3
