"""PRISM's selection: centre vs exact mode, the threshold window, and constructed noise it must find exactly."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from prism.filters.prism import PrismSelector
from prism.memory import FeatureBank
from prism.selection import ThresholdWindow, class_centres, exact_scores, p_clean, rank_cut, select


def _clustered(n_per_class: int, classes: int, dim: int = 32, spread: float = 0.15, seed: int = 0):
    """Samples around fixed class directions (the same for every seed); ``seed`` draws only the spread."""
    centres = F.normalize(torch.randn(classes, dim, generator=torch.Generator().manual_seed(1234)), dim=1)
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    feats = F.normalize(centres[labels] + spread * torch.randn(len(labels), dim, generator=g), dim=1)
    return feats, labels


def test_bank_is_fifo_and_masked() -> None:
    bank = FeatureBank(5, 2)
    bank.enqueue(torch.arange(8.0).view(4, 2), torch.tensor([0, 1, 2, 3]), torch.tensor([True, False, True, True]))
    assert bank.labels.tolist() == [0, 2, 3, -1, -1] and int(bank.count) == 3
    assert bank.feats[1].tolist() == [4.0, 5.0] and bank.feats[3].tolist() == [0.0, 0.0]
    bank.enqueue(torch.full((3, 2), 9.0), torch.tensor([7, 8, 9]))
    assert bank.labels.tolist() == [9, 2, 3, 7, 8] and int(bank.count) == 5 and int(bank.ptr) == 1


def test_exact_mode_equals_centre_mode_when_centres_are_bank_means() -> None:
    feats, labels = _clustered(40, 12, seed=1)
    bank = FeatureBank(300, 32)
    bank.enqueue(feats[:300], labels[:300])  # classes 0-7 fully, class 7 partly; 8-11 absent
    queries, qlabels = _clustered(6, 12, seed=2)
    centres, has = class_centres(bank, 12)
    p_centre = p_clean(queries @ centres.T, qlabels, has)
    scores, present = exact_scores(queries, bank, 12)
    p_exact = p_clean(scores, qlabels, present)
    assert torch.equal(has, present) and has.sum() == 8
    assert torch.allclose(p_centre, p_exact, atol=1e-5)
    assert (p_exact[qlabels >= 8] == 1).all()  # no centre yet: counts as clean
    # the selector in both modes, centres synchronised with the bank; exact mode both from a bank that keeps running
    # class sums and from one that does not (the literal matmul + segment mean)
    summed = FeatureBank(300, 32, num_classes=12)
    summed.enqueue(feats[:300], labels[:300])
    centre_sel, exact_sel = PrismSelector(12, 32, mode="centre"), PrismSelector(12, 32, mode="exact")
    centre_sel.update(bank, labels[:300], torch.ones(300, dtype=torch.bool))
    a, b = centre_sel(queries, qlabels, bank), exact_sel(queries, qlabels, summed)
    c = PrismSelector(12, 32, mode="exact")(queries, qlabels, bank)
    assert torch.allclose(a.p, b.p, atol=1e-5) and torch.equal(a.keep, b.keep)
    assert torch.allclose(c.p, b.p, atol=1e-5) and torch.equal(c.keep, b.keep)


def test_p_clean_is_the_softmax_over_present_classes() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.4]])
    present = torch.tensor([True, True, False])
    p = p_clean(scores, torch.tensor([0, 2]), present)
    assert math.isclose(p[0].item(), math.exp(0.9) / (math.exp(0.9) + math.exp(0.1)), rel_tol=1e-6)
    assert p[1].item() == 1.0


def test_strm_with_window_one_equals_trm() -> None:
    g = torch.Generator().manual_seed(0)
    window = ThresholdWindow(1)
    for _ in range(20):
        p = torch.rand(64, generator=g) * 0.9
        trm, keep_rank = rank_cut(p, 0.5)
        sel = select(p, torch.ones(64, dtype=torch.bool), torch.tensor(True), rate=0.5, window=window)
        assert sel.threshold.item() == trm.item() == torch.sort(p).values[31].item()
        assert torch.equal(sel.keep, keep_rank) and int(sel.keep.sum()) == 32


def test_strm_is_the_mean_of_the_last_tau_trms() -> None:
    g = torch.Generator().manual_seed(1)
    window, trms = ThresholdWindow(3), []
    for _ in range(6):
        p = torch.rand(10, generator=g) * 0.8
        trms.append(torch.sort(p).values[4].item())
        sel = select(p, torch.ones(10, dtype=torch.bool), torch.tensor(True), rate=0.5, window=window)
        if sel.keep.any() and bool((p > window.mean()).any()):
            assert math.isclose(window.mean().item(), sum(trms[-3:]) / len(trms[-3:]), rel_tol=1e-6)
    # a TRM of 1 (no sample had a centre) never enters the window
    before = window.state_dict()
    select(torch.ones(10), torch.zeros(10, dtype=torch.bool), torch.tensor(True), rate=0.5, window=window)
    assert torch.equal(window.valid, before["valid"]) and torch.equal(window.values, before["values"])


def _noisy_batches(selector: PrismSelector, steps: int):
    """Bank of clean, well-separated classes; each batch has a known quarter carrying a wrong label."""
    feats, labels = _clustered(50, 8, spread=0.1, seed=3)
    bank = FeatureBank(400, 32)
    bank.enqueue(feats, labels)
    selector.update(bank, labels, torch.ones(400, dtype=torch.bool))
    for step in range(steps):
        batch, true = _clustered(8, 8, spread=0.1, seed=10 + step)
        noisy = torch.zeros(64, dtype=torch.bool)
        noisy[torch.randperm(64, generator=torch.Generator().manual_seed(step))[:16]] = True
        given = torch.where(noisy, (true + 1 + step % 7) % 8, true)
        yield selector(batch, given, bank), noisy


def test_mask_flags_exactly_the_mislabelled_samples() -> None:
    """With the per-batch cut (window 1) at the noise rate, the flagged set is exactly the mislabelled one."""
    for step, (sel, noisy) in enumerate(_noisy_batches(PrismSelector(8, 32, rate=0.25, window=1), 8)):
        assert torch.equal(~sel.keep, noisy), step


def test_smoothed_threshold_flags_nearly_exactly() -> None:
    """sTRM averages the per-batch cuts, so a mislabelled sample just above the average may pass: few do."""
    hits = flagged = noisy_total = 0
    for sel, noisy in _noisy_batches(PrismSelector(8, 32, rate=0.25, window=5), 10):
        hits += int((~sel.keep & noisy).sum())
        flagged += int((~sel.keep).sum())
        noisy_total += int(noisy.sum())
    assert hits / flagged >= 0.95 and hits / noisy_total >= 0.9


def test_flagged_samples_never_reach_the_bank() -> None:
    feats, labels = _clustered(30, 4, spread=0.1, seed=4)
    selector, bank = PrismSelector(4, 32, rate=0.25, window=3), FeatureBank(1000, 32)
    bank.enqueue(feats, labels)
    selector.update(bank, labels, torch.ones(120, dtype=torch.bool))
    batch, true = _clustered(8, 4, spread=0.1, seed=5)
    given = true.clone()
    given[:8] = 1  # class-0 images labelled 1
    sel = selector(batch, given, bank)
    bank.enqueue(batch, given, sel.keep)
    selector.update(bank, given, sel.keep)
    stored = bank.feats[: int(bank.count)]
    for i in range(32):
        hit = (stored - batch[i]).abs().sum(1).lt(1e-6).any().item()
        assert hit == bool(sel.keep[i]), i
    assert not sel.keep[:8].any() and sel.keep[8:].all()


def test_first_step_keeps_everything() -> None:
    selector, bank = PrismSelector(4, 32), FeatureBank(100, 32)
    feats, labels = _clustered(8, 4)
    sel = selector(feats, labels, bank)
    assert sel.keep.all() and (sel.p == 1).all()


def test_running_class_sums_equal_a_pass_over_the_bank() -> None:
    """The bank's class sums survive wrap-around eviction and masked enqueues exactly (to float64 rounding)."""
    g = torch.Generator().manual_seed(7)
    bank = FeatureBank(50, 16, num_classes=6)
    for step in range(40):
        feats = F.normalize(torch.randn(12, 16, generator=g), dim=1)
        labels = torch.randint(0, 6, (12,), generator=g)
        bank.enqueue(feats, labels, torch.rand(12, generator=g) > 0.3)
        running, present = bank.class_means()
        plain = FeatureBank(50, 16)
        plain.enqueue(bank.feats, bank.labels, bank.labels >= 0)
        reference, present_ref = class_centres(plain, 6)
        assert torch.equal(present, present_ref), step
        assert torch.allclose(running, reference, atol=1e-6), step


def _two_class_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """8 samples, labels 0,0,0,0,1,1,1,1: samples 3 and 7 point at the other class's direction."""
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    feats = torch.stack([a, a, F.normalize(a + 0.1 * b, dim=0), b, b, b, F.normalize(b + 0.1 * a, dim=0), a])
    return feats, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])


def test_batch_positive_filter_drops_the_samples_least_like_their_batch_positives() -> None:
    feats, labels = _two_class_batch()
    selector = PrismSelector(2, 2, rate=0.25, window=1, score="batch-positive")
    selection = selector(feats, labels, FeatureBank(4, 2))
    # sample 3's positives are 0, 1, 2 (mean similarity ~0.03), sample 7's are 4, 5, 6 (~0.03); the rest ~0.66
    assert selection.keep.tolist() == [True, True, True, False, True, True, True, False]
    expected = ((feats @ feats.T)[3, :3]).mean()
    assert torch.isclose(selection.p[3], expected)


def test_memory_positive_filter_scores_the_similarity_to_the_class_centre() -> None:
    feats, labels = _two_class_batch()
    bank = FeatureBank(8, 2, num_classes=2)
    bank.enqueue(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0, 1]))
    selector = PrismSelector(2, 2, rate=0.25, window=1, score="memory-positive")
    selector.update(bank, torch.tensor([0, 1]), torch.tensor([True, True]))
    selection = selector(feats, labels, bank)
    assert torch.allclose(selection.p, (feats * torch.eye(2)[labels]).sum(1))  # f . centre of its own label
    assert selection.keep.tolist() == [True, True, True, False, True, True, True, False]


def test_trm_is_window_one() -> None:
    """With window 1 the threshold of every batch is that batch's own rank cut (TRM), never an average."""
    feats, labels = _two_class_batch()
    selector = PrismSelector(2, 2, rate=0.25, window=1, score="batch-positive")
    for _ in range(3):
        selection = selector(feats, labels, FeatureBank(4, 2))
        trm, _ = rank_cut(selection.p, 0.25)
        assert torch.equal(selection.threshold, trm)
        assert torch.equal(selection.keep, selection.p > trm)
