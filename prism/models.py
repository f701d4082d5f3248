"""Backbone (global average or max pooling) + linear embedding head + L2 normalisation."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from noisekit.backbones.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    cached_state_dict,
    imagenet_state_dict,
    load_state_dict_file,
)
from noisekit.errors import NoisekitError
from prism.bninception import BNInception, load_released

# the commonly distributed ImageNet BN-Inception (Cadene's conversion of the Caffe model), which the PRISM authors
# load from ~/.torch/models (ret_benchmark/config/model_path.py)
BN_INCEPTION_URL = "http://data.lip6.fr/cadene/pretrainedmodels/bn_inception-52deb4733.pth"
AUTHORS_CACHE = Path("~/.torch/models").expanduser()


class SmallCNN(nn.Module):
    """Three conv blocks (3x3 conv, BatchNorm, ReLU), 2x2 max pooling after the first two, global average (or max)
    pooling: for small greyscale-like images trained from scratch (digits at 8 px, Omniglot at 28 px; any size)."""

    def __init__(self, width: int = 16, pooling: str = "avg") -> None:
        super().__init__()
        self.out_dim = 4 * width

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        self.body = nn.Sequential(
            *block(3, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            global_pool(pooling),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def global_pool(pooling: str) -> nn.Module:
    return nn.AdaptiveMaxPool2d(1) if pooling == "max" else nn.AdaptiveAvgPool2d(1)


def resnet_trunk(arch: str, weights: str, pooling: str = "avg") -> tuple[nn.Module, int]:
    model = getattr(models, arch)(weights=None)
    if weights != "random":
        state = imagenet_state_dict(arch) if weights == "imagenet" else load_state_dict_file(Path(weights))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise NoisekitError(
                f"--weights {weights}: not a {arch} state dict ({str(exc).splitlines()[0][:120]})"
            ) from None
    dim = model.fc.in_features
    model.fc = nn.Identity()
    model.avgpool = global_pool(pooling)
    return model, dim


def bninception_trunk(weights: str, pooling: str) -> tuple[nn.Module, int]:
    model = BNInception(pooling)
    if weights != "random":
        state = (
            cached_state_dict(
                BN_INCEPTION_URL,
                what="ImageNet BN-Inception",
                hash_prefix=None,  # no sha256 prefix could be verified offline; load_released checks the keys
                also=(AUTHORS_CACHE / BN_INCEPTION_URL.rsplit("/", 1)[1],),
            )
            if weights == "imagenet"
            else load_state_dict_file(Path(weights))
        )
        try:
            load_released(model, state)
        except ValueError as exc:
            raise NoisekitError(f"--weights {weights}: {exc}") from None
    return model, model.out_dim


class Embedder(nn.Module):
    """images -> (n, embed_dim) L2-normalised embeddings.

    uint8 images (what prism's data pipeline yields) are scaled to [0, 1] and normalised with the ImageNet mean and
    std here, on the model's device; float images are taken as already normalised.
    """

    def __init__(
        self, arch: str, *, embed_dim: int, weights: str = "random", pooling: str = "avg", normalize: bool = True
    ) -> None:
        super().__init__()
        self.normalize = normalize  # False: the raw features before a classifier (retrieval normalises them)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if arch == "small_cnn":
            self.backbone = SmallCNN(pooling=pooling)
            dim = self.backbone.out_dim
        elif arch == "bninception":
            self.backbone, dim = bninception_trunk(weights, pooling)
        else:
            self.backbone, dim = resnet_trunk(arch, weights, pooling)
        self.head = nn.Linear(dim, embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = (x.float().div(255) - self.mean) / self.std  # the same operations as ToTensor + Normalize
        features = self.head(self.backbone(x))
        return F.normalize(features, dim=1) if self.normalize else features


def build_model(
    arch: str, *, embed_dim: int, weights: str, seed: int, pooling: str = "avg", normalize: bool = True
) -> Embedder:
    """The model, initialised from ``seed`` without touching the global random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Embedder(arch, embed_dim=embed_dim, weights=weights, pooling=pooling, normalize=normalize)
