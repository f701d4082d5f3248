"""The DML losses pytorch-metric-learning implements, applied to the samples a filter keeps. Nothing is rewritten:
each method is the library's class with the parameters of its paper (the README lists them)."""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.distances import CosineSimilarity
from torch import nn

from prism.memory import FeatureBank
from prism.methods.base import Context, Method

MARGIN = 0.5  # the contrastive negative margin (cosine), as in MCL


class KeptLoss(Method):
    """A pytorch-metric-learning loss applied to the kept samples only."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(
        self,
        emb: torch.Tensor,
        labels: torch.Tensor,
        keep: torch.Tensor,
        bank: FeatureBank | None = None,
        iteration: int = 0,
    ) -> torch.Tensor:
        return self.loss(emb[keep], labels[keep])

    def proxy_parameters(self) -> list[nn.Parameter]:
        return list(self.loss.parameters())

    def class_similarity(self, feats: torch.Tensor) -> torch.Tensor | None:
        """(n, C) the loss's similarity of each sample to each class's proxy (ProxySim), None without proxies:
        cosine to ProxyNCA's and Proxy-Anchor's proxies and the normalised softmax's class weights; SoftTriple's
        relaxed similarity over a class's centres (pytorch_metric_learning/losses/soft_triple_loss.py, its
        ``compute_loss``: softmax over a class's centres at 1 / gamma of the cosine, weighted sum)."""
        loss, cosine = self.loss, CosineSimilarity()
        if isinstance(loss, losses.SoftTripleLoss):
            sims = cosine(feats, loss.fc.t()).view(len(feats), loss.num_classes, loss.centers_per_class)
            return (torch.softmax(sims * loss.gamma, dim=2) * sims).sum(2)
        if isinstance(loss, losses.NormalizedSoftmaxLoss):
            return cosine(feats, loss.W.t())
        if isinstance(loss, losses.ProxyAnchorLoss | losses.ProxyNCALoss):
            return cosine(feats, loss.proxies)
        return None


def library_loss(name: str, ctx: Context) -> nn.Module:
    """The pytorch-metric-learning loss behind ``name``, with its paper's parameters."""
    c, d = ctx.num_classes, ctx.embed_dim
    if name == "contrastive":  # Hadsell et al. 2006, cosine form: positives pulled to 1, negatives below 0.5
        return losses.ContrastiveLoss(pos_margin=1.0, neg_margin=MARGIN, distance=CosineSimilarity())
    if name == "ms":  # Wang et al. 2019: alpha 2, beta 50, lambda 0.5 (the library's base)
        return losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)
    if name == "circle":  # Sun et al. 2020, the fine-grained retrieval setting: m 0.4, gamma 80
        return losses.CircleLoss(m=0.4, gamma=80)
    if name == "fastap":  # Cakir et al. 2019: 10 histogram bins
        return losses.FastAPLoss(num_bins=10)
    if name == "nsoftmax":  # Zhai and Wu 2019: temperature 0.05
        return losses.NormalizedSoftmaxLoss(c, d, temperature=0.05)
    if name == "proxynca":  # Movshovitz-Attias et al. 2017; softmax scale 3 as the PRISM authors (noXBM_loss.py)
        return losses.ProxyNCALoss(c, d, softmax_scale=3)
    if name == "proxyanchor":  # Kim et al. 2020: margin 0.1, alpha 32
        return losses.ProxyAnchorLoss(c, d, margin=0.1, alpha=32)
    if name == "softtriple":  # Qian et al. 2019: 10 centres per class (2 from 500 classes on), la 20, gamma 0.1
        return losses.SoftTripleLoss(c, d, centers_per_class=10 if c < 500 else 2, la=20, gamma=0.1, margin=0.01)
    raise ValueError(f"no library loss {name!r}")


def builder(name: str):
    def build(ctx: Context) -> KeptLoss:
        return KeptLoss(library_loss(name, ctx))

    return build
