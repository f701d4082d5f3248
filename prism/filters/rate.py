"""``--filter-rate auto``: the share of noisy labels, estimated online from the filter's own class scores.

Each scored sample gets a rank p-value from where its label falls among the m other present classes ranked by the
criterion's score (PRISM's centre similarity, vMF-Sim's log-likelihood, ProxySim's proxy similarity, the kNN vote
count; Co-teaching's logits). If the label is noisy, the best-scoring other class is the sample's true class and the
label is one of the m wrong classes left (itself and the m - 1 others below the top), exchangeable with them, so the
number a = max(above - 1, 0) of them scoring above it is uniform on 0..m-1 and the randomised p-value
p = (a + U) / m, U ~ U(0, 1 + ties), is exactly U(0, 1) (ties: classes scoring equal to the label, whose order is
drawn at random; nothing is drawn here, the indicator below is taken in expectation). A clean label ranks at the
top: a = 0 and p < (1 + ties) / m, near 0. Over the last ``window`` batches the share of noisy labels is Storey's
estimator of the null proportion (Storey, "A direct approach to false discovery rates", JRSS-B 2002, Eq. 6, with his
lambda = 0.5):

    R_hat = #{i : p_i > lambda} / ((1 - lambda) * #{i scored})

What it assumes: a noisy label is a uniformly drawn wrong class (symmetric noise; Small Cluster merges a cluster into
a uniformly drawn other class), and a clean label ranks in the top half of the classes. It over-estimates by twice
the share of clean samples whose own class the criterion ranks in the bottom half (a network that has not learned
yet: hence the estimate is only used after the warm-up), and under-estimates by memorisation (a noisy image pulled
to its wrong class ranks it high). Clipped to [0, MAX_RATE].

Two other estimators were measured and rejected. The share of samples whose most likely class is not their label
(lambda = 0 above) counts every clean sample the criterion misranks: 40 iterations into a from-scratch omniglot run
it read 0.95 at 50% noise. A two-component mixture over P_clean (DivideMix's recipe) on the final P_clean of a
pretrained omniglot run at 50% symmetric noise put 0.21 in its noisy component (temperature-1 P_clean of noisy and
clean images overlap there: medians 0.0097 and 0.0114), and a mixture always finds a second component, so it cannot
say "no noise".
"""

from __future__ import annotations

import torch
from torch import nn

MAX_RATE = 0.95  # a rank cut never removes more than this share of a batch
WINDOW = 30  # batches, the same tau as PRISM's threshold window (the authors' CARS-98N setting)
LAMBDA = 0.5  # Storey's lambda


def beyond(scores: torch.Tensor, present: torch.Tensor, labels: torch.Tensor, lam: float = LAMBDA) -> torch.Tensor:
    """(n,) P(p_i > lam) of each sample's randomised rank p-value (see the module docstring); ``scores`` (n, C),
    ``present`` (C,) the classes that take part. Rows whose own class is absent, or with no other class, give 0."""
    scores = scores.float()
    own = scores.gather(1, labels.view(-1, 1))
    others = present.view(1, -1) & (
        torch.arange(scores.shape[1], device=scores.device).view(1, -1) != labels.view(-1, 1)
    )
    m = others.sum(1).float().clamp(min=1)
    above = ((scores > own) & others).sum(1).float()
    ties = ((scores == own) & others).sum(1).float()
    below_top = (above - 1).clamp(min=0)
    low, high = below_top / m, ((below_top + 1 + ties) / m).clamp(max=1)
    return ((high - lam) / (high - low)).clamp(0, 1)


class RateEstimator(nn.Module):
    """Ring of the last ``window`` batches' (disagreeing, scored) counts on the device; a module, so that a method
    holding one (Co-teaching) saves and restores it with its own state."""

    def __init__(self, window: int = WINDOW, *, device: torch.device | str = "cpu") -> None:
        super().__init__()
        if window < 1:
            raise ValueError(f"rate window must be >= 1, got {window}")
        self.register_buffer("beyond", torch.zeros(window, dtype=torch.float64, device=device))
        self.register_buffer("scored", torch.zeros(window, dtype=torch.float64, device=device))
        self.register_buffer("slot", torch.zeros((), dtype=torch.long, device=device))

    @torch.no_grad()
    def observe(self, scores: torch.Tensor, present: torch.Tensor, labels: torch.Tensor, scored: torch.Tensor) -> None:
        """Count one batch: ``scores`` (n, C) the criterion's class scores, ``present`` (C,), ``scored`` (n,) the
        samples whose own class is present."""
        scored = scored & present[labels] & (present.sum() > 1)
        self.beyond[self.slot] = (beyond(scores, present, labels) * scored).sum().double()
        self.scored[self.slot] = scored.sum().double()
        self.slot.copy_((self.slot + 1) % len(self.scored))

    def value(self) -> torch.Tensor:
        """() R_hat, in [0, MAX_RATE]; 0 before any sample was scored."""
        total = (1 - LAMBDA) * self.scored.sum()
        return torch.where(total > 0, self.beyond.sum() / total.clamp(min=1e-12), total * 0).clamp(max=MAX_RATE)


class Rate:
    """The rate a filter cuts at: a fixed R, or (``auto``) the estimate, updated by each batch it scores."""

    def __init__(self, rate: float | str, *, device: torch.device | str = "cpu") -> None:
        if rate != "auto" and not (isinstance(rate, float | int) and 0.0 <= rate < 1.0):
            raise ValueError(f"filter rate must be in [0, 1) or 'auto', got {rate!r}")
        self.fixed = None if rate == "auto" else float(rate)
        self.fixed_tensor = None if rate == "auto" else torch.tensor(self.fixed, device=device)  # no copy per step
        self.estimator = RateEstimator(device=device) if rate == "auto" else None

    @property
    def auto(self) -> bool:
        return self.estimator is not None

    def __call__(
        self, scores: torch.Tensor | None, present: torch.Tensor | None, labels: torch.Tensor, scored: torch.Tensor
    ) -> float | torch.Tensor:
        """This batch's R: the fixed one, or the estimate after counting this batch (``scores`` (n, C) and
        ``present`` (C,): the criterion's class scores; None: a criterion without them counts nothing)."""
        if self.estimator is None:
            return self.fixed
        if scores is not None:
            self.estimator.observe(scores, present, labels, scored)
        return self.estimator.value()

    def current(self) -> torch.Tensor:
        """() the R in use now: the fixed one or the latest estimate (NaN while it has scored nothing: the warm-up)."""
        if self.estimator is None:
            return self.fixed_tensor
        value = self.estimator.value()
        return torch.where(self.estimator.scored.sum() > 0, value, torch.full_like(value, float("nan")))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in self.estimator.state_dict().items()} if self.estimator is not None else {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.estimator is not None and state:
            self.estimator.load_state_dict(state)
