"""PRISM's criterion (Liu et al., CVPR 2021; alibaba-edu/Ranking-based-Instance-Selection
ret_benchmark/losses/memory_contrastive_loss_w_PRISM.py) and the two criteria of its ablation (Table 5): P_clean
from class centres of the bank (``--filter prism``), the mean similarity to the batch's positives
(``batch-positive``, Eq. 12) or to the bank's (``memory-positive``, Eq. 13), each cut by the sTRM rule of
``prism/selection.py``, whose docstring states the formulas and the start-up rules.

With ``--filter-rate auto`` the rank cut's R is the estimate of ``prism/filters/rate.py``, from the rank of each
sample's label among the class centres (``batch-positive`` has no class scores and takes a fixed rate only).
"""

from __future__ import annotations

import torch

from prism.filters.base import Filter
from prism.filters.rate import Rate
from prism.memory import FeatureBank
from prism.selection import (
    Selection,
    ThresholdWindow,
    batch_positive,
    centre_scores,
    class_centres,
    exact_scores,
    likely_class,
    p_clean,
    select,
)

MODES = ("centre", "exact")
SCORES = ("prism", "batch-positive", "memory-positive")


class PrismSelector(Filter):
    """PRISM's state: class centres and the threshold window. Call it on a batch; then, after the kept samples have
    entered the bank, call :meth:`update` with the batch labels and the keep-mask."""

    def __init__(
        self,
        num_classes: int,
        dim: int,
        *,
        rate: float | str = 0.5,
        window: int = 30,
        mode: str = "centre",
        startup: str = "ours",
        score: str = "prism",
        device: torch.device | str = "cpu",
    ) -> None:
        if rate == "auto" and score == "batch-positive":
            raise ValueError("batch-positive has no class scores to estimate the rate from: give a fixed rate")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if startup not in ("ours", "authors"):
            raise ValueError(f"startup must be ours or authors, got {startup!r}")
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        self.num_classes, self.mode, self.startup, self.score = num_classes, mode, startup, score
        self.rate = Rate(rate, device=device)
        self.centres = torch.zeros(num_classes, dim, device=device)
        self.has_centre = torch.zeros(num_classes, dtype=torch.bool, device=device)
        self.window = ThresholdWindow(window, device=device)
        self.refresh_after = torch.ones((), dtype=torch.bool, device=device)

    @torch.no_grad()
    def __call__(self, feats: torch.Tensor, labels: torch.Tensor, bank: FeatureBank) -> Selection:
        feats = feats.detach().float()
        if self.score == "batch-positive":
            p, has = batch_positive(feats, labels)
            return select(p, has, has.any(), rate=self.rate(None, None, labels, has), window=self.window)
        if self.mode == "exact" and bank.num_classes == self.num_classes:
            means, present = bank.class_means()
            scores = centre_scores(feats, means)
        elif self.mode == "exact":
            scores, present = exact_scores(feats, bank, self.num_classes)
        else:
            scores, present = centre_scores(feats, self.centres), self.has_centre
        likely = likely_class(scores, present)
        rate = self.rate(scores, present, labels, present[labels])
        if self.score == "memory-positive":
            has = present[labels]
            own = scores.gather(1, labels.view(-1, 1)).squeeze(1)
            p = torch.where(has, own, torch.ones_like(own))
            chosen = select(p, has, present.any(), rate=rate, window=self.window)
        elif self.startup == "authors":
            # the authors' loss returns before touching its state when the bank is empty: no centres refresh then
            self.refresh_after = bank.count > 0
            p = p_clean(scores, labels, present, absent_logit=0.0)
            always = torch.ones_like(labels, dtype=torch.bool)
            chosen = select(p, always, self.refresh_after, rate=rate, window=self.window)
        else:
            p = p_clean(scores, labels, present)
            chosen = select(p, present[labels], present.any(), rate=rate, window=self.window)
        chosen.likely = likely
        return chosen

    @torch.no_grad()
    def update(self, bank: FeatureBank, labels: torch.Tensor, keep: torch.Tensor) -> None:
        """Recompute the centres of the classes kept in this step from the bank (the others keep theirs)."""
        if self.mode == "exact":
            return  # exact mode reads the bank itself
        means, present = class_centres(bank, self.num_classes)
        kept = torch.zeros(self.num_classes, device=means.device).index_add_(0, labels, keep.float()) > 0
        refresh = kept & present & self.refresh_after
        self.centres = torch.where(refresh.unsqueeze(1), means, self.centres)
        self.has_centre = self.has_centre | refresh

    def own_state(self) -> dict[str, torch.Tensor]:
        return {
            "centres": self.centres.clone(),
            "has_centre": self.has_centre.clone(),
            **{f"window.{k}": v for k, v in self.window.state_dict().items()},
        }

    def load_own_state(self, state: dict[str, torch.Tensor]) -> None:
        self.centres = state["centres"].to(self.centres.device)
        self.has_centre = state["has_centre"].to(self.has_centre.device)
        self.window.load_state_dict({"values": state["window.values"], "valid": state["window.valid"]})
