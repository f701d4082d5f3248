"""ProxySim (Liu et al., "Noise-Resistant Deep Metric Learning with Probabilistic Instance Filtering", arXiv
2108.01431 v1): ``--filter proxysim``. Its text could not be read here (only the abstracts); v1's abstract says it
"replaces the centers maintained by AvgSim with the proxies trained by proxy-based method", so this is PRISM's
P_clean (``prism/filters/prism.py``: a temperature-1 softmax over the classes of the cosine similarity) with each
class's centre replaced by the method's learned proxy, cut by the same sTRM rule and window. v2's abstract no longer
names ProxySim.

The class similarity is the loss's own (``Method.class_similarity``): the cosine similarity to the proxy for
ProxyNCA, Proxy-Anchor and the normalised softmax's class weights, and SoftTriple's relaxed similarity over a class's
centres (its softmax-weighted mean similarity, Qian et al. Eq. 6, as pytorch-metric-learning computes it). Every
class has a proxy from the first step, so every sample is scored; the proxies are only as good as the training
that moved them, so with a warm-up the filter waits for it like PRISM. Only methods with proxies take it.
"""

from __future__ import annotations

import torch

from prism.filters.base import Filter
from prism.filters.rate import Rate
from prism.memory import FeatureBank
from prism.methods.base import Method
from prism.selection import Selection, ThresholdWindow, likely_class, p_clean, select


class ProxySimFilter(Filter):
    def __init__(
        self, method: Method, *, rate: float | str = 0.5, window: int = 30, device: torch.device | str = "cpu"
    ) -> None:
        self.method = method
        self.rate = Rate(rate, device=device)
        self.window = ThresholdWindow(window, device=device)

    @torch.no_grad()
    def __call__(self, feats: torch.Tensor, labels: torch.Tensor, bank: FeatureBank) -> Selection:
        scores = self.method.class_similarity(feats.detach().float())
        present = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
        scored = torch.ones_like(labels, dtype=torch.bool)
        likely = likely_class(scores, present)
        p = p_clean(scores, labels, present)
        chosen = select(p, scored, present.any(), rate=self.rate(scores, present, labels, scored), window=self.window)
        chosen.likely = likely
        return chosen

    def own_state(self) -> dict[str, torch.Tensor]:
        return {f"window.{k}": v for k, v in self.window.state_dict().items()}

    def load_own_state(self, state: dict[str, torch.Tensor]) -> None:
        self.window.load_state_dict({"values": state["window.values"], "valid": state["window.valid"]})
