"""The embedding model: a backbone (prism/backbones: global average or max pooling) + linear embedding head + L2
normalisation, with the backbone's own input normalisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prism.backbones import build_trunk


class Embedder(nn.Module):
    """images -> (n, embed_dim) L2-normalised embeddings.

    uint8 images (what prism's data pipeline yields) are scaled to [0, 1] and normalised with the backbone's mean and
    std (ImageNet's for resnets, BN-Inception and the small CNN; timm's data config for timm models, e.g. 0.5/0.5 for
    EfficientNet-Lite0) here, on the model's device; float images are taken as already normalised.
    """

    def __init__(
        self,
        arch: str,
        *,
        embed_dim: int,
        weights: str = "random",
        pooling: str = "avg",
        normalize: bool = True,
        freeze_bn: bool = False,
    ) -> None:
        super().__init__()
        self.normalize = normalize  # False: the raw features before a classifier (retrieval normalises them)
        self.freeze_bn = freeze_bn
        trunk = build_trunk(arch, weights, pooling)
        self.register_buffer("mean", torch.tensor(trunk.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(trunk.std).view(1, 3, 1, 1), persistent=False)
        self.backbone = trunk.module
        self.head = nn.Linear(trunk.dim, embed_dim)

    def train(self, mode: bool = True) -> Embedder:
        """With ``freeze_bn`` the backbone's BatchNorm layers stay in eval mode: they normalise with the pretrained
        running statistics and never update them (their scale and shift still train). Proxy-Anchor (Kim et al.
        2020, train.py ``--bn-freeze 1``, its default) does this for every fine-tuned backbone; the PRISM authors
        have the switch (ret_benchmark/modeling/backbone/build.py:14, ``MODEL.BACKBONE.FREEZE_BN``, False in their
        CARS-98N config). On the embedded Omniglot the batch statistics of binary character images replace
        ImageNet's within 25 iterations and ruin the pretrained features: with a learning rate of 1e-12, so that
        only the statistics move, validation P@1 fell from 0.678 to 0.389 in 50 iterations (bench/README.md)."""
        super().train(mode)
        if mode and self.freeze_bn:
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = (x.float().div(255) - self.mean) / self.std  # the same operations as ToTensor + Normalize
        features = self.head(self.backbone(x))
        return F.normalize(features, dim=1) if self.normalize else features


def build_model(
    arch: str,
    *,
    embed_dim: int,
    weights: str,
    seed: int,
    pooling: str = "avg",
    normalize: bool = True,
    freeze_bn: bool = False,
) -> Embedder:
    """The model, initialised from ``seed`` without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Embedder(
            arch, embed_dim=embed_dim, weights=weights, pooling=pooling, normalize=normalize, freeze_bn=freeze_bn
        )
