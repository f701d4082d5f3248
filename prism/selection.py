"""PRISM: ranking-based instance selection (Liu et al., CVPR 2021), as pure tensor functions plus a small state.

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

MODES = ("centre", "exact")
SCORES = ("prism", "batch-positive", "memory-positive")


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


def rank_cut(p: torch.Tensor, rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The TRM (floor(rate * n)-th smallest P, -inf when that is 0) and the mask keeping all but those lowest."""
    k = math.floor(rate * p.shape[0])
    keep = torch.ones_like(p, dtype=torch.bool)
    if k == 0:
        return torch.full((), float("-inf"), device=p.device, dtype=p.dtype), keep
    lowest = torch.argsort(p, stable=True)[:k]
    keep[lowest] = False
    return p[lowest[-1]], keep


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
    """One step's decision: ``keep`` (n,) bool, ``p`` (n,) P_clean, ``threshold`` () the cut applied."""

    keep: torch.Tensor
    p: torch.Tensor
    threshold: torch.Tensor


def select(
    p: torch.Tensor, has_centre: torch.Tensor, any_centre: torch.Tensor, *, rate: float, window: ThresholdWindow
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
    return Selection(keep=keep, p=p, threshold=threshold)


class PrismSelector:
    """PRISM's state: class centres and the threshold window. Call it on a batch; then, after the kept samples have
    entered the bank, call :meth:`update_centres` with the batch labels and the keep-mask."""

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        rate: float = 0.5,
        window: int = 30,
        mode: str = "centre",
        startup: str = "ours",
        score: str = "prism",
        device: torch.device | str = "cpu",
    ) -> None:
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"filter rate must be in [0, 1), got {rate}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if startup not in ("ours", "authors"):
            raise ValueError(f"startup must be ours or authors, got {startup!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.num_classes, self.rate, self.mode, self.startup, self.score = num_classes, rate, mode, startup, score
        self.centres = torch.zeros(num_classes, dim, device=device)
        self.has_centre = torch.zeros(num_classes, dtype=torch.bool, device=device)
        self.window = ThresholdWindow(window, device=device)
        self.refresh_after = torch.ones((), dtype=torch.bool, device=device)

    @torch.no_grad()
    def __call__(self, feats: torch.Tensor, labels: torch.Tensor, bank: FeatureBank) -> Selection:
        feats = feats.detach().float()
        if self.score == "batch-positive":
            p, has = batch_positive(feats, labels)
            return select(p, has, has.any(), rate=self.rate, window=self.window)
        if self.mode == "exact" and bank.num_classes == self.num_classes:
            means, present = bank.class_means()
            scores = centre_scores(feats, means)
        elif self.mode == "exact":
            scores, present = exact_scores(feats, bank, self.num_classes)
        else:
            scores, present = centre_scores(feats, self.centres), self.has_centre
        if self.score == "memory-positive":
            has = present[labels]
            own = scores.gather(1, labels.view(-1, 1)).squeeze(1)
            return select(
                torch.where(has, own, torch.ones_like(own)), has, present.any(), rate=self.rate, window=self.window
            )
        if self.startup == "authors":
            # the authors' loss returns before touching its state when the bank is empty: no centres refresh then
            self.refresh_after = bank.count > 0
            p = p_clean(scores, labels, present, absent_logit=0.0)
            always = torch.ones_like(labels, dtype=torch.bool)
            return select(p, always, self.refresh_after, rate=self.rate, window=self.window)
        p = p_clean(scores, labels, present)
        return select(p, present[labels], present.any(), rate=self.rate, window=self.window)

    @torch.no_grad()
    def update_centres(self, bank: FeatureBank, labels: torch.Tensor, keep: torch.Tensor) -> None:
        """Recompute the centres of the classes kept in this step from the bank (the others keep theirs)."""
        if self.mode == "exact":
            return  # exact mode reads the bank itself
        means, present = class_centres(bank, self.num_classes)
        kept = torch.zeros(self.num_classes, device=means.device).index_add_(0, labels, keep.float()) > 0
        refresh = kept & present & self.refresh_after
        self.centres = torch.where(refresh.unsqueeze(1), means, self.centres)
        self.has_centre = self.has_centre | refresh

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "centres": self.centres.clone(),
            "has_centre": self.has_centre.clone(),
            **{f"window.{k}": v for k, v in self.window.state_dict().items()},
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.centres = state["centres"].to(self.centres.device)
        self.has_centre = state["has_centre"].to(self.has_centre.device)
        self.window.load_state_dict({"values": state["window.values"], "valid": state["window.valid"]})
