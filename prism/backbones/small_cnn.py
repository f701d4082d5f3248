"""The small CNN prism trains from scratch on small images (digits at 8 px, Omniglot at 28 px)."""

from __future__ import annotations

import torch
from torch import nn


def global_pool(pooling: str) -> nn.Module:
    return nn.AdaptiveMaxPool2d(1) if pooling == "max" else nn.AdaptiveAvgPool2d(1)


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
