"""Smooth Proxy-Anchor (Roig et al., 2020, arXiv 2006.05142), written from the paper: no public code exists.

Two phases. Phase 1 trains a confidence module: a linear layer over the network's features with one sigmoid output
per class, trained with binary cross-entropy against the one-hot (noisy) labels, while the network trains with it.
Phase 2 trains the embedding with the smoothed Proxy-Anchor loss: a smoothing function of the sample's confidence
for its labelled class, w = sigmoid(sharpness * (c - position)), makes it a positive of its proxy with weight w and
a negative of that proxy with weight 1 - w (the paper: "positive ... if [confident], otherwise negative"); for every
other proxy it is a negative. With w = 1 for every sample the loss is exactly Proxy-Anchor (Kim et al., 2020;
tested against pytorch-metric-learning's ProxyAnchorLoss).

Choices the available text leaves open, made here, and the fix of a degenerate first version:
- The module is linear over the embedding head's *raw* output (the paper: a confidence module over the network's
  features; ``normalized=False`` in the registry, and retrieval and the proxy similarities normalise it). A first
  version read the L2-normalised embedding: its logits were bounded, the labelled class's confidence stayed
  0.23-0.39 on clean and on 50%-noisy labels alike, no sample reached w > 0.5, and the loss was a uniformly
  down-weighted Proxy-Anchor.
- Its binary cross-entropy is summed over the C classes and averaged over the batch (one multi-label loss per
  sample). torch's default mean over the n x C entries divides the labelled class's gradient by C (700 on
  Omniglot), which kept its confidence near the prior.
- Phase 1 is the run's warm-up, or a quarter of the run when there is none; in phase 2 the module keeps training
  with BCE on detached features, so its confidences follow the network (whose backbone, unlike the paper's, is not
  frozen).
- Position 0.5 (the BCE decision boundary), sharpness 10; Proxy-Anchor's alpha 32, margin 0.1 and proxies at 100x
  the backbone's rate; no relabelling of a sample to another confident class.
``summary.json`` records ``smooth_proxyanchor.confident_share`` (share of phase-2 samples with w > 0.5) and
``confident_precision`` (share of those whose label is clean, where known) beside the clean share of phase 2.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prism.memory import FeatureBank
from prism.methods.base import Context, Method

ALPHA, MARGIN = 32.0, 0.1
POSITION, SHARPNESS = 0.5, 10.0


def smooth_proxy_anchor(
    emb: torch.Tensor, proxies: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """The smoothed Proxy-Anchor loss; ``weight`` (n,) is each sample's positive weight for its labelled proxy.

    pos = mean over proxies with a positive of log(1 + sum_x w+ exp(-alpha (s - margin)));
    neg = mean over all proxies of log(1 + sum_x w- exp(alpha (s + margin))).
    """
    sims = F.normalize(emb, dim=1) @ F.normalize(proxies, dim=1).T  # (n, C)
    onehot = F.one_hot(labels, proxies.shape[0]).to(sims.dtype)
    w_pos = onehot * weight.view(-1, 1)
    w_neg = 1.0 - w_pos
    pos = _log1p_weighted_sum(-ALPHA * (sims - MARGIN), w_pos)
    neg = _log1p_weighted_sum(ALPHA * (sims + MARGIN), w_neg)
    has_pos = onehot.sum(0) > 0
    return pos[has_pos].sum() / has_pos.sum().clamp(min=1) + neg.mean()


def _log1p_weighted_sum(logits: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per column: log(1 + sum_rows weights * exp(logits)), stably (a zero weight contributes nothing)."""
    masked = torch.where(
        weights > 0, logits + torch.log(weights.clamp(min=1e-30)), torch.full_like(logits, float("-inf"))
    )
    zero = torch.zeros(1, logits.shape[1], dtype=logits.dtype, device=logits.device)
    return torch.logsumexp(torch.cat([zero, masked]), dim=0)


class SmoothProxyAnchor(Method):
    report_key = "smooth_proxyanchor"

    def __init__(self, ctx: Context) -> None:
        super().__init__()
        # phase-2 counts: samples, confident (w > 0.5), and with known noise: known, clean, confident known/clean
        self.register_buffer("counts", torch.zeros(6, dtype=torch.float64))
        self.last_weight: torch.Tensor | None = None
        self.proxies = nn.Parameter(torch.empty(ctx.num_classes, ctx.embed_dim))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")  # as pytorch-metric-learning's ProxyAnchorLoss
        self.confidence = nn.Linear(ctx.embed_dim, ctx.num_classes)
        self.switch = ctx.first_stage

    def forward(
        self,
        emb: torch.Tensor,
        labels: torch.Tensor,
        keep: torch.Tensor,
        bank: FeatureBank | None = None,
        iteration: int = 0,
    ) -> torch.Tensor:
        phase_one = iteration < self.switch
        features = emb if phase_one else emb.detach()  # phase 1 trains the network through the module
        logits = self.confidence(features)
        targets = F.one_hot(labels, logits.shape[1]).to(logits.dtype)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()
        self.last_weight = None
        if phase_one:
            return bce
        with torch.no_grad():
            confidence = torch.sigmoid(logits).gather(1, labels.view(-1, 1)).squeeze(1)
            weight = torch.sigmoid(SHARPNESS * (confidence - POSITION))
        self.last_weight = weight
        return smooth_proxy_anchor(emb, self.proxies, labels, weight) + bce

    @torch.no_grad()
    def observe(self, noisy: torch.Tensor) -> None:
        if self.last_weight is None:
            return
        confident, known, clean = self.last_weight > 0.5, noisy >= 0, noisy == 0
        parts = (torch.ones_like(confident), confident, known, clean, confident & known, confident & clean)
        self.counts += torch.stack([p.sum() for p in parts]).to(self.counts)

    def report(self, labels: np.ndarray, clean: np.ndarray) -> dict[str, float | None]:
        n, confident, known, clean_n, confident_known, confident_clean = self.counts.tolist()
        return {
            "phase2_samples": int(n),
            "confident_share": confident / n if n else None,
            "confident_precision": confident_clean / confident_known if confident_known else None,
            "clean_share": clean_n / known if known else None,
        }

    def proxy_parameters(self) -> list[nn.Parameter]:
        return [self.proxies]
