"""PRISM's threshold rule and class scores (Liu et al., CVPR 2021) as pure tensor functions; the filters in
``prism/filters/`` (PRISM's criterion in ``prism/filters/prism.py``) build on them.

For a batch of L2-normalised features f_i with labels y_i and a feature bank:

- class centres w_k = mean of the bank's features of class k (Eq. 6), and
  ``P_clean(i) = softmax_k(w_k . f_i)[y_i]`` over the classes that have a centre (Eq. 7);
- the exact form (Eq. 2/3) uses the mean similarity to every bank sample of class k. Literally that is one matmul
  against the bank and a segment mean (:func:`exact_scores`, the reference); by linearity it equals f_i . (mean of
  class k's bank features), so exact mode evaluates it from the bank's running class sums at the cost of centre
  mode. What separates the modes is staleness: centre mode refreshes only the centres of the classes kept in a step
  (Eq. 6), exact mode always reads the current bank;
- threshold: TRM is the floor(R * n)-th smallest P of the batch (the authors' rank cut); sTRM is the mean of the last
  tau TRMs. A TRM of 1 (no sample had a centre) or NaN does not enter the window. Samples with P > sTRM are kept;
  if none would be, the batch falls back to the rank cut and the window keeps only its newest value (as in the
  authors' code);
- start-up (``startup="ours"``): a sample whose class has no centre yet counts as clean (P = 1) and is always kept;
  with no centre at all (an empty bank: the first step) every sample is kept. ``startup="authors"`` follows
  ret_benchmark/losses/memory_contrastive_loss_w_PRISM.py: every class enters the softmax, those without a centre
  with a zero centre (logit 0); a sample whose own class has none gets P = 1 but the rank cut still removes the
  floor(R * n) lowest, ties broken by batch position; only an empty bank keeps the whole batch. On data with many
  classes (SOP) the authors' rule keeps 1 - R of each batch while few centres exist, ours nearly all of it.

The ablation's other criteria (the paper's Table 5) replace P_clean by an unnormalised score and keep the same
threshold rule: ``batch-positive`` (Eq. 12) the mean cosine similarity of a sample to the other samples of its label
in the batch, ``memory-positive`` (Eq. 13) its mean similarity to the bank's samples of its label (= f_i . w_y, the
class centre). A sample without a positive (none in the batch, or no centre yet) is kept. The authors' code
implements neither (ret_benchmark/losses holds only PRISM); TRM is ``window=1``.

Nothing here loops over samples or synchronises with the host: the window is a tensor ring on the device.
A selector returns a keep-mask that a loss consumes, as a pytorch-metric-learning miner returns indices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prism.memory import FeatureBank


def segment_mean(values: torch.Tensor, segments: torch.Tensor, num_segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the rows of ``values`` (M, k) per segment id in ``segments`` (M,) (-1 = ignore): (means, counts)."""
    valid = segments >= 0
    index = segments.clamp(min=0)
    weights = valid.to(values.dtype)
    sums = values.new_zeros(num_segments, values.shape[1]).index_add_(0, index, values * weights.unsqueeze(1))
    counts = values.new_zeros(num_segments).index_add_(0, index, weights)
    return sums / counts.clamp(min=1).unsqueeze(1), counts


def class_centres(bank: FeatureBank, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(num_classes, d) means of the bank's features per class (Eq. 6) and which classes have one; from the bank's
    running class sums when it keeps them, else by one pass over the bank."""
    if bank.num_classes == num_classes:
        return bank.class_means()
    means, counts = segment_mean(bank.feats, bank.labels, num_classes)
    return means, counts > 0


def centre_scores(feats: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """(n, C) similarities f_i . w_k."""
    return feats @ centres.T


def exact_scores(feats: torch.Tensor, bank: FeatureBank, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, C) mean similarity of each sample to every bank sample of class k (Eq. 2/3), and which classes occur.

    The similarities are computed bank-major, (M, n), so the segment mean adds contiguous rows.
    """
    sims = bank.feats @ feats.T
    means, counts = segment_mean(sims, bank.labels, num_classes)
    return means.T, counts > 0


def p_clean(
    scores: torch.Tensor, labels: torch.Tensor, present: torch.Tensor, *, absent_logit: float = float("-inf")
) -> torch.Tensor:
    """(n,) softmax probability of each sample's own label over the present classes (absent ones enter with
    ``absent_logit``: -inf leaves them out); 1 where its own class is absent."""
    logits = scores.masked_fill(~present, absent_logit)
    own = torch.gather(torch.log_softmax(logits, dim=1), 1, labels.view(-1, 1)).squeeze(1).exp()
    return torch.where(present[labels], own, torch.ones_like(own))


def batch_positive(feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n,) mean similarity of each sample to the other samples of its label in the batch (1 where there are none)
    and which samples have one."""
    same = (labels.view(-1, 1) == labels.view(1, -1)) & ~torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    count = same.sum(1)
    mean = ((feats @ feats.T) * same).sum(1) / count.clamp(min=1)
    has = count > 0
    return torch.where(has, mean, torch.ones_like(mean)), has


def rank_cut(p: torch.Tensor, rate: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The TRM (floor(rate * n)-th smallest P, -inf when that is 0) and the mask keeping all but those lowest.

    ``rate`` may be a device tensor (``--filter-rate auto``'s estimate): the cut then needs no host synchronisation.
    """
    if not torch.is_tensor(rate):
        k = math.floor(rate * p.shape[0])
        keep = torch.ones_like(p, dtype=torch.bool)
        if k == 0:
            return torch.full((), float("-inf"), device=p.device, dtype=p.dtype), keep
        lowest = torch.argsort(p, stable=True)[:k]
        keep[lowest] = False
        return p[lowest[-1]], keep
    k = torch.floor(rate.to(p.device, torch.float64) * p.shape[0]).long()
    order = torch.argsort(p, stable=True)
    rank = torch.empty_like(order).scatter_(0, order, torch.arange(len(p), device=p.device))
    trm = torch.where(k > 0, p[order[(k - 1).clamp(min=0)]], torch.full((), float("-inf"), device=p.device))
    return trm.to(p.dtype), rank >= k


class ThresholdWindow:
    """The last ``size`` TRMs (newest in slot 0) and which slots hold one; sTRM is their mean."""

    def __init__(self, size: int, *, device: torch.device | str = "cpu") -> None:
        self.values = torch.zeros(size, device=device)
        self.valid = torch.zeros(size, dtype=torch.bool, device=device)

    def push(self, value: torch.Tensor) -> None:
        ok = torch.isfinite(value) & (value < 1.0)
        rolled_v = torch.cat([value.view(1).to(self.values.dtype), self.values[:-1]])
        rolled_ok = torch.cat([torch.ones(1, dtype=torch.bool, device=self.valid.device), self.valid[:-1]])
        self.values = torch.where(ok, rolled_v, self.values)
        self.valid = torch.where(ok, rolled_ok, self.valid)

    def mean(self) -> torch.Tensor:
        """sTRM; NaN while the window is empty."""
        return (self.values * self.valid).sum() / self.valid.sum()

    def keep_newest_only(self, when: torch.Tensor) -> None:
        newest = torch.zeros_like(self.valid)
        newest[0] = True
        self.valid = torch.where(when, self.valid & newest, self.valid)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"values": self.values.clone(), "valid": self.valid.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.values = state["values"].to(self.values.device)
        self.valid = state["valid"].to(self.valid.device)


@dataclass
class Selection:
    """One step's decision: ``keep`` (n,) bool, ``p`` (n,) P_clean (or the criterion's score), ``threshold`` () the
    cut applied, ``likely`` (n,) the class the criterion finds most likely for each sample (-1: none; what
    ``noisekit make cleaned --relabel`` sets) and ``has`` (n,) whether the sample was scored against its own class."""

    keep: torch.Tensor
    p: torch.Tensor
    threshold: torch.Tensor
    likely: torch.Tensor | None = None
    has: torch.Tensor | None = None


def select(
    p: torch.Tensor,
    has_centre: torch.Tensor,
    any_centre: torch.Tensor,
    *,
    rate: float | torch.Tensor,
    window: ThresholdWindow,
) -> Selection:
    """Apply the sTRM rule to one batch's P_clean (``has_centre`` (n,): the sample's class has a centre; pass all
    True for the authors' start-up, and ``any_centre`` False only to keep the whole batch)."""
    trm, keep_rank = rank_cut(p, rate)
    window.push(trm)
    strm = window.mean()
    keep_window = p > strm
    fallback = ~window.valid.any() | ~keep_window.any()
    window.keep_newest_only(window.valid.any() & ~keep_window.any())
    keep = torch.where(fallback, keep_rank, keep_window) | ~has_centre
    keep = keep | ~any_centre  # no centre at all: keep everything
    threshold = torch.where(fallback, trm, strm)
    return Selection(keep=keep, p=p, threshold=threshold, has=has_centre)


def likely_class(scores: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(n,) the present class of highest score per row of ``scores`` (n, C); -1 where no class is present."""
    best = scores.masked_fill(~present, float("-inf")).argmax(1)
    return torch.where(present.any(), best, torch.full_like(best, -1))
